"""The kinds of remote, and what the agent needs of each: the seam a new kind plugs into.

A kind is one module with a ``Nodes`` class keeping the ``Backend`` protocol below (the
calls ``refresh``, ``writes``, ``tokens`` and ``mounts`` make) and one row in ``KINDS``:
the module, the foreign library it alone imports, and the extra that installs it. The
options a kind takes are ``agent.remotes``' (``KIND_KEYS``).

Rules of this module:
- light: it names modules, never imports one until a remote of that kind makes its first
  call (``make``), so an agent whose config names no remote of a kind never loads its
  library (hvac, boto3);
- every ``Backend`` call blocks (``Remote.call`` runs it in a worker thread under the
  remote's deadline), translates its library's exceptions into ``client.errors`` (a
  refusal -> ``RemoteDenied``, no answer -> ``RemoteUnavailable``, a concurrent change ->
  ``Conflict``), and carries no credential or value in any error;
- a secret's version is whatever identifies one upstream (KV v2's number, Secrets
  Manager's version id): compared for equality only, and 0 or "" means "none yet".
"""

from __future__ import annotations

import importlib
import sys
from typing import Final, NamedTuple, Protocol

from agent.remotes import Mount, RemoteOptions, Secret, SecretMeta, TokenInfo, Version
from client import errors

__all__ = ["Backend", "Kind", "KINDS", "CHAIN", "make"]

# what a remote whose kind has no login holds as its token: a marker, not a credential
# (boto3 finds the credentials itself, and is never given this)
CHAIN: Final = "credential-chain"


class Backend(Protocol):
    """One remote's calls, whatever its kind."""

    calls: int  # requests sent (status reports it)
    last_node: str | None  # where the last answer came from
    last_error: str | None
    epoch: int  # bumped at each lock: a call under way sends nothing more
    has_mount: bool  # whether ``mount`` means anything (KV v2 mounts); else it is never asked

    def names(self, token: str, deadline: float) -> list[str] | None: ...
    def mount(self, token: str, deadline: float) -> Mount | None: ...
    def meta(self, token: str, name: str, deadline: float) -> SecretMeta | None: ...
    def read(self, token: str, name: str, deadline: float) -> Secret | None: ...
    def write(
        self,
        token: str,
        name: str,
        values: dict[str, str],
        custom: dict[str, str] | None,
        cas: Version,
        deadline: float,
    ) -> Version: ...
    def delete_version(self, token: str, name: str, version: Version, deadline: float) -> None: ...
    def lookup_self(self, token: str, deadline: float) -> TokenInfo: ...
    def renew_self(self, token: str, deadline: float) -> float: ...
    def approle_login(self, role_id: str, secret_id: str, deadline: float) -> str: ...
    def jwt_login(self, role: str, jwt: str, deadline: float) -> str: ...
    def cert_login(self, deadline: float) -> str: ...


class Kind(NamedTuple):
    module: str  # holds ``Nodes``
    library: str  # the foreign library only that module imports
    extra: str  # pip install 'credential-agent[EXTRA]'
    what: str  # what needs it, in a message
    login: bool  # a token from `agent remote login`; else credentials come from the library's own chain


KINDS: Final = {
    "openbao": Kind("agent.remotes.openbao", "hvac", "team", "team vaults", login=True),
    "aws-secrets-manager": Kind("agent.remotes.aws", "boto3", "aws", "AWS Secrets Manager remotes", login=False),
}


def make(options: RemoteOptions) -> Backend:
    """The ``Nodes`` of ``options.kind``, its module imported now (the first call)."""
    kind = KINDS[options.kind]
    try:
        module = importlib.import_module(kind.module)
    except ImportError as e:  # the agent was installed (or started from a venv) without the extra
        raise errors.RemoteUnavailable(
            f"remote {options.name!r}: this agent's Python ({sys.executable}) lacks {e.name or kind.library}, "
            f"which {kind.what} need: pip install 'credential-agent[{kind.extra}]' into it, "
            "then restart the agent"
        ) from None
    backend: Backend = module.Nodes(options)
    return backend
