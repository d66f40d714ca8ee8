"""An encrypted backup of the local vault: the file's format, its payload, and the plan
of a restore.

Rules of this module:
- nothing of the vault is in the clear, names included. A file is four lines of text
  and one ciphertext of the whole payload, base64 in lines of 76 characters::

      credential-agent backup 1
      kdf scrypt n=262144 r=8 p=1 salt=<16 bytes, base64>
      cipher aes-256-gcm nonce=<12 bytes, base64>
      mac <HMAC-SHA256 of the three lines above, base64>

  The four lines are the ciphertext's associated data: neither changes without the
  other failing its check. The MAC, under a second key from the same scrypt, tells a
  wrong passphrase from a damaged body. The KDF's parameters are read from the file
  (bounded by ``crypto.MAX_KDF_MEMORY``), so the default can grow;
- the payload is msgpack: ``format`` (``PAYLOAD_FORMAT``), ``created``,
  ``agent_version`` and ``credentials``, each with ``platform``, ``credential_type``,
  ``value``, ``metadata``, ``expires_at``, ``created``, ``updated`` and, for a vault
  that keeps previous values, an optional ``history`` list (none is written yet; a
  restore accepts one and writes the current values only). Unknown keys are ignored: a newer agent may add some;
- the cryptography is ``agent.crypto``'s; this module does no I/O and talks to no
  agent (``agent.cli.backup`` does both);
- what cannot be opened raises ``BackupError``: one line naming no credential and no
  value. No repr holds a value.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import os
import re
import textwrap
from collections.abc import Mapping, Sequence
from typing import Any, Final, Literal

import msgpack

from agent import crypto
from client import errors

__all__ = [
    "MAGIC",
    "FORMAT",
    "PAYLOAD_FORMAT",
    "BackupError",
    "Credential",
    "Backup",
    "Sealed",
    "pack",
    "unpack",
    "seal",
    "parse",
    "open_sealed",
    "Action",
    "Step",
    "plan",
    "describe_cost",
]

MAGIC: Final = "credential-agent backup"
FORMAT: Final = 1  # the file's layout (the header lines); a new one is a new number
PAYLOAD_FORMAT: Final = 1  # the msgpack payload's shape
_LINE: Final = 76  # base64 line length, as PEM and MIME
_SALT_SIZE: Final = 16
_KDF_RE: Final = re.compile(r"kdf scrypt n=(\d{1,10}) r=(\d{1,4}) p=(\d{1,4}) salt=([A-Za-z0-9+/=]{1,88})")
_CIPHER_RE: Final = re.compile(r"cipher aes-256-gcm nonce=([A-Za-z0-9+/=]{1,44})")
_MAC_RE: Final = re.compile(r"mac ([A-Za-z0-9+/=]{1,88})")
_MAX_P: Final = 16  # scrypt's p multiplies the time, not the memory: a bound all the same

Key = tuple[str, str]


class BackupError(Exception):
    """A backup that cannot be opened or read; ``wrong_passphrase`` when that is the likely cause."""

    def __init__(self, message: str, *, wrong_passphrase: bool = False) -> None:
        super().__init__(message)
        self.wrong_passphrase = wrong_passphrase


@dataclasses.dataclass(frozen=True)
class Credential:
    """One credential of a backup (or of the vault, to compare); its value is never in a repr."""

    platform: str
    credential_type: str
    value: str = dataclasses.field(repr=False)
    metadata: dict[str, Any]
    expires_at: float | None
    created: float | None = None
    updated: float | None = None
    # previous values: reserved in the payload; no backup writes them yet, no restore reads them
    history: tuple[Any, ...] = dataclasses.field(default=(), repr=False)

    @property
    def key(self) -> Key:
        return (self.platform, self.credential_type)

    @property
    def name(self) -> str:
        return f"{self.platform}/{self.credential_type}"


@dataclasses.dataclass(frozen=True)
class Backup:
    created: float
    agent_version: str
    credentials: tuple[Credential, ...]

    @property
    def history(self) -> int:
        """How many previous values the backup holds (none restored yet)."""
        return sum(len(c.history) for c in self.credentials)


# --- the payload -----------------------------------------------------------------------
def pack(credentials: Sequence[Credential], agent_version: str, created: float) -> bytes:
    rows = []
    for c in credentials:
        row: dict[str, Any] = {
            "platform": c.platform,
            "credential_type": c.credential_type,
            "value": c.value,
            "metadata": c.metadata,
            "expires_at": c.expires_at,
            "created": c.created,
            "updated": c.updated,
        }
        if c.history:
            row["history"] = list(c.history)
        rows.append(row)
    payload = {"format": PAYLOAD_FORMAT, "created": created, "agent_version": agent_version, "credentials": rows}
    packed: bytes = msgpack.packb(payload, use_bin_type=True)
    return packed


def unpack(raw: bytes) -> Backup:
    """The payload of an opened backup. It passed its integrity check, so a shape this
    agent does not read is a newer format (or a bug), never damage."""
    try:
        payload = msgpack.unpackb(raw, raw=False, strict_map_key=True)
    except (ValueError, TypeError, msgpack.UnpackException):
        raise BackupError("the backup's contents are not msgpack this agent reads") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("format"), int):
        raise BackupError("the backup's contents have no format this agent reads")
    if payload["format"] > PAYLOAD_FORMAT:
        raise BackupError(
            f"the backup's contents are format {payload['format']}, newer than this agent reads "
            f"({PAYLOAD_FORMAT}); restore it with the agent that made it ({_text(payload.get('agent_version'))})"
        )
    rows = payload.get("credentials")
    if not isinstance(rows, list):
        raise BackupError("the backup's contents hold no credential list")
    credentials = tuple(_credential(row, i) for i, row in enumerate(rows))
    if len({c.key for c in credentials}) != len(credentials):
        raise BackupError("the backup lists a credential twice")
    created = payload.get("created")
    return Backup(_time(created) or 0.0, _text(payload.get("agent_version")), credentials)


def _credential(row: Any, i: int) -> Credential:
    bad = BackupError(f"credential {i + 1} of the backup is not one this agent reads")
    if not isinstance(row, dict):
        raise bad
    platform, ctype, value = row.get("platform"), row.get("credential_type"), row.get("value")
    metadata, expires, history = row.get("metadata") or {}, row.get("expires_at"), row.get("history") or []
    if not (isinstance(platform, str) and isinstance(ctype, str) and isinstance(value, str)):
        raise bad
    if not isinstance(metadata, dict) or not isinstance(history, list):
        raise bad
    if expires is not None and _time(expires) is None:
        raise bad
    return Credential(
        platform,
        ctype,
        value,
        metadata,
        _time(expires),
        _time(row.get("created")),
        _time(row.get("updated")),
        tuple(history),
    )


def _time(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _text(value: Any) -> str:
    return value if isinstance(value, str) and value.isprintable() and len(value) <= 64 else "unknown"


# --- the file ----------------------------------------------------------------------------
def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str, size: int | None, what: str) -> bytes:
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise BackupError(f"the backup's {what} is damaged") from None
    if size is not None and len(data) != size:
        raise BackupError(f"the backup's {what} is damaged")
    return data


def seal(payload: bytes, passphrase: str, cost: tuple[int, int, int] = crypto.BACKUP_KDF) -> str:
    """The backup file's text: ``payload`` sealed under ``passphrase`` (the slow step: scrypt)."""
    params = crypto.KdfParams(os.urandom(_SALT_SIZE), *cost)
    nonce = os.urandom(crypto.NONCE_SIZE)
    keys = crypto.backup_keys(passphrase, params)
    signed = (
        f"{MAGIC} {FORMAT}\n"
        f"kdf scrypt n={params.n} r={params.r} p={params.p} salt={_b64(params.salt)}\n"
        f"cipher aes-256-gcm nonce={_b64(nonce)}\n"
    )
    header = f"{signed}mac {_b64(crypto.header_mac(keys, signed.encode('ascii')))}\n"
    body = crypto.seal_backup(keys, nonce, payload, header.encode("ascii"))
    return header + "\n".join(textwrap.wrap(_b64(body), _LINE)) + "\n"


@dataclasses.dataclass(frozen=True)
class Sealed:
    """A backup file read and checked as far as it can be without the passphrase."""

    params: crypto.KdfParams
    nonce: bytes
    mac: bytes
    signed: bytes  # the three lines the MAC covers
    header: bytes  # the four lines: the ciphertext's associated data
    body: bytes = dataclasses.field(repr=False)


def parse(data: bytes) -> Sealed:
    """The file's header and ciphertext; ``BackupError`` for anything else."""
    not_ours = BackupError(f"not a credential-agent backup (its first line is not '{MAGIC} {FORMAT}')")
    first, _, _ = data[:200].partition(b"\n")
    prefix = MAGIC.encode("ascii") + b" "
    if not first.startswith(prefix):
        raise not_ours
    version = first[len(prefix) :].decode("ascii", "replace").strip()
    if version != str(FORMAT):
        if version.isdigit():
            raise BackupError(
                f"this backup is format {version}; this agent reads format {FORMAT} (a newer agent made it)"
            )
        raise not_ours
    try:  # a copy that went through Windows or a mail client may have CRLF line ends
        text = data.decode("ascii").replace("\r\n", "\n")
    except UnicodeDecodeError:
        raise BackupError("the backup is damaged (a byte that is not text)") from None
    lines = text.split("\n")
    if len(lines) < 5:
        raise BackupError("the backup is truncated (its header is incomplete)")
    kdf, cipher, mac = _KDF_RE.fullmatch(lines[1]), _CIPHER_RE.fullmatch(lines[2]), _MAC_RE.fullmatch(lines[3])
    if kdf is None or cipher is None or mac is None:
        raise BackupError("the backup's header is damaged (or from a version of the agent that wrote it otherwise)")
    params = crypto.KdfParams(_unb64(kdf.group(4), _SALT_SIZE, "header"), *(int(kdf.group(i)) for i in (1, 2, 3)))
    _check_cost(params)
    signed = "\n".join(lines[:3]) + "\n"
    header = signed + lines[3] + "\n"
    body = _unb64("".join(lines[4:]), None, "contents")
    if len(body) < 16:  # not even the GCM tag
        raise BackupError("the backup is truncated (its contents are missing)")
    return Sealed(
        params,
        _unb64(cipher.group(1), crypto.NONCE_SIZE, "header"),
        _unb64(mac.group(1), crypto.MAC_SIZE, "header"),
        signed.encode("ascii"),
        header.encode("ascii"),
        body,
    )


def _check_cost(params: crypto.KdfParams) -> None:
    """A crafted header must not make a restore take the machine's memory or hours."""
    n, r, p = params.n, params.r, params.p
    if n < 2 or n & (n - 1) or r < 1 or not 1 <= p <= _MAX_P:
        raise BackupError("the backup's header is damaged (scrypt parameters no scrypt takes)")
    if crypto.kdf_memory(params) > crypto.MAX_KDF_MEMORY:
        raise BackupError(
            f"the backup asks scrypt for {crypto.kdf_memory(params) >> 20} MiB, more than the "
            f"{crypto.MAX_KDF_MEMORY >> 20} MiB this agent allows; nothing was tried"
        )


def open_sealed(sealed: Sealed, passphrase: str) -> Backup:
    """The backup inside ``sealed``, or ``BackupError``: a wrong passphrase (or a changed
    header), or damaged contents."""
    keys = crypto.backup_keys(passphrase, sealed.params)
    try:
        crypto.check_header_mac(keys, sealed.signed, sealed.mac)
    except errors.BadPassphrase as e:
        raise BackupError(e.message, wrong_passphrase=True) from None
    try:
        raw = crypto.open_backup(keys, sealed.nonce, sealed.body, sealed.header)
    except errors.IntegrityError as e:
        raise BackupError(e.message) from None
    return unpack(raw)


def describe_cost(params: crypto.KdfParams | tuple[int, int, int]) -> str:
    n, r, p = (params.n, params.r, params.p) if isinstance(params, crypto.KdfParams) else params
    shown = f"2^{n.bit_length() - 1}" if n & (n - 1) == 0 else str(n)
    return f"scrypt n={shown} r={r} p={p}, {128 * r * n >> 20} MiB"


# --- the plan of a restore -------------------------------------------------------------
# what a restore does with one credential: add it, replace the vault's with the backup's,
# delete the vault's (--replace: not in the backup), keep the vault's (it differs, and
# the backup does not win), or nothing (the same in both)
Action = Literal["add", "replace", "delete", "keep", "same"]


@dataclasses.dataclass(frozen=True)
class Step:
    platform: str
    credential_type: str
    action: Action
    note: str | None = None

    @property
    def key(self) -> Key:
        return (self.platform, self.credential_type)

    @property
    def name(self) -> str:
        return f"{self.platform}/{self.credential_type}"


def _differences(have: Credential | str | None, want: Credential) -> str:
    if not isinstance(have, Credential):
        return f"the vault's copy cannot be read ({have or 'unknown'})"
    what = [
        field
        for field, differs in (
            ("value", have.value != want.value),
            ("metadata", have.metadata != want.metadata),
            ("expiry", have.expires_at != want.expires_at),
        )
        if differs
    ]
    return ", ".join(what) + " differ" + ("s" if len(what) == 1 else "")


def plan(
    backup: Sequence[Credential],
    local: Mapping[Key, Credential | str | None],
    team: Mapping[Key, str],
    *,
    overwrite: bool,
    replace: bool,
) -> list[Step]:
    """What a restore of ``backup`` does to a vault holding ``local`` (a credential whose
    value could not be read: why, as a string; one only the vault names, which was not
    read: None), in name order. ``team``: the team vault keys listed
    beside them, which a restore never touches, but which a local key shadows."""
    steps = []
    for c in sorted(backup, key=lambda c: c.key):
        if c.key not in local:
            shadows = f"shadows the key of the team vault {team[c.key]}" if c.key in team else None
            steps.append(Step(c.platform, c.credential_type, "add", shadows))
            continue
        have = local[c.key]
        if isinstance(have, Credential) and (have.value, have.metadata, have.expires_at) == (
            c.value,
            c.metadata,
            c.expires_at,
        ):
            steps.append(Step(c.platform, c.credential_type, "same"))
        elif overwrite or replace:
            steps.append(Step(c.platform, c.credential_type, "replace", _differences(have, c)))
        else:
            why = f"{_differences(have, c)}; the vault's is kept, --overwrite takes the backup's"
            steps.append(Step(c.platform, c.credential_type, "keep", why))
    if replace:
        wanted = {c.key for c in backup}
        for key in sorted(local.keys() - wanted):
            steps.append(Step(*key, "delete", "not in the backup"))
    return sorted(steps, key=lambda s: s.key)
