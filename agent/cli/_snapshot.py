"""What ``agent backup`` and ``agent restore`` share: the local vault read through the
client, and a passphrase read from a file.

Rules of this module:
- the vault is read as ``agent export`` reads it: names, metadata and expiry from
  ``list``, values from ``get``s, pipelined in batches (``BATCH``, ``BATCH_BYTES``) so
  that no reply and no batch grows with the vault; team vault keys are set apart;
- an error that concerns the whole agent (``GLOBAL``: locked, unreachable, ...) stops
  the command; one that concerns a credential is returned with its name;
- a passphrase file must be a regular file of the user's that no one else may read.
"""

from __future__ import annotations

import os

from agent.cli._common import CliError
from client import Client, errors

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from typing import Any, Final

    from agent import backup

__all__ = ["BATCH", "BATCH_BYTES", "GLOBAL", "Key", "pipelined", "listing", "read_vault", "passphrase_file"]

# Requests per pipelined batch, and their bytes: a batch's requests fit the socket's
# buffer, so sending them never waits on replies not yet read (the agent stops reading
# a connection whose replies pile up), and a batch's replies are bounded too.
BATCH: Final = 100
BATCH_BYTES: Final = 128 * 1024
# what a passphrase file may hold: a line, not a document
MAX_PASSPHRASE_FILE: Final = 64 * 1024
# errors that concern the whole agent, not one credential: the command stops on them
GLOBAL = (
    errors.Locked,
    errors.NotInitialized,
    errors.AgentUnavailable,
    errors.AgentTimeout,
    errors.KeystoreUnavailable,
    errors.ProtocolError,
)

Key = tuple[str, str]


# --- talking to the agent ------------------------------------------------------------
def pipelined(c: Client, requests: Sequence[tuple[str, dict[str, Any]]]) -> list[Any]:
    """Each request's result or error, sent in batches (``BATCH``, ``BATCH_BYTES``)."""
    from client import protocol

    results: list[Any] = []
    batch: list[tuple[str, dict[str, Any]]] = []
    size = 0
    for request in requests:
        n = len(protocol.encode_request(*request))
        if batch and (len(batch) >= BATCH or size + n > BATCH_BYTES):
            results += _sent(c, batch)
            batch, size = [], 0
        batch.append(request)
        size += n
    if batch:
        results += _sent(c, batch)
    return results


def _sent(c: Client, batch: list[tuple[str, dict[str, Any]]]) -> list[Any]:
    replies = c.call_many(batch)
    for reply in replies:
        if isinstance(reply, GLOBAL):
            raise reply
    return replies


def listing(c: Client) -> tuple[dict[Key, dict[str, Any]], dict[Key, str]]:
    """The local vault's entries and the team vault keys listed beside them (their remote)."""
    local: dict[Key, dict[str, Any]] = {}
    team: dict[Key, str] = {}
    for e in c.list():
        key = (e["platform"], e["credential_type"])
        if e.get("source", "local") == "local":
            local[key] = e
        else:
            team[key] = e["source"]
    return local, team


def read_vault(
    c: Client, keys: Iterable[Key] | None = None
) -> tuple[dict[Key, backup.Credential | Exception], list[Key], dict[Key, str]]:
    """The local vault's credentials (all, or those of ``keys`` it holds) with their
    values, or the error that kept one from being read; every local name listed; and
    the team vault keys listed beside them."""
    from agent import backup
    from client.messages import name_args

    local, team = listing(c)
    wanted = sorted(local if keys is None else set(keys) & local.keys())
    values = pipelined(c, [("get", name_args(*key)) for key in wanted])
    if any("metadata" not in local[key] for key in wanted):
        # listed while locked, so without metadata, and a get opened the vault (a keystore
        # vault unlocks itself on demand, as for any use): list it again
        local = {k: e for k, e in listing(c)[0].items() if k in local}
    out: dict[Key, backup.Credential | Exception] = {}
    for key, value in zip(wanted, values, strict=True):
        e = local.get(key)
        if isinstance(value, errors.NotFound) or e is None:
            continue  # deleted since it was listed
        if isinstance(value, Exception):
            out[key] = value
        elif "metadata" not in e:
            raise errors.Locked("the agent locked while the vault was read; nothing was changed")
        else:
            out[key] = backup.Credential(*key, value, e["metadata"] or {}, e["expires_at"], e["created"], e["updated"])
    return out, sorted(local), team


def passphrase_file(path: str | None) -> str | None:
    """The first line of ``--passphrase-file``: a regular file of yours that no one else
    may read (as ssh refuses a private key others can read)."""
    if path is None:
        return None
    import stat

    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise CliError(f"cannot read the passphrase file {path}: {e.strerror or type(e).__name__}") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise CliError(f"the passphrase file {path} is not a regular file")
        if hasattr(os, "getuid") and (st.st_uid != os.getuid() or st.st_mode & 0o077):
            raise CliError(
                f"the passphrase file {path} must be yours and private (mode {stat.S_IMODE(st.st_mode):04o}; "
                f"chmod 600 {path})"
            )
        data = f.read(MAX_PASSPHRASE_FILE + 1)
    if len(data) > MAX_PASSPHRASE_FILE:
        raise CliError(f"the passphrase file {path} is larger than a passphrase ({MAX_PASSPHRASE_FILE} bytes)")
    try:
        passphrase = data.decode("utf-8").splitlines()[0] if data.strip() else ""
    except UnicodeDecodeError:
        raise CliError(f"the passphrase file {path} is not UTF-8 text") from None
    if not passphrase:
        raise CliError(f"the passphrase file {path} is empty (its first line is the passphrase)")
    return passphrase
