"""Client library of the credential agent: connectors import this, never keyring.

``import client`` loads only the standard library: no msgpack, keyring,
cryptography or asyncio. ``Client`` (and with it msgpack) and ``AsyncClient``
(and asyncio) are imported on first use.
"""

from __future__ import annotations

from client.errors import (
    AgentError,
    AgentTimeout,
    AgentUnavailable,
    InvalidCredential,
    Locked,
    NotFound,
    UntrustedSocket,
)

TYPE_CHECKING = False  # typing itself costs ~10 ms of import: see client._sync
if TYPE_CHECKING:
    from typing import Any

    from client._sync import Client
    from client.aio import AsyncClient
    from client.service import CredentialMigrationTool, CredentialService

__all__ = [
    "Client",
    "AsyncClient",
    "CredentialService",
    "CredentialMigrationTool",
    "AgentError",
    "AgentTimeout",
    "AgentUnavailable",
    "InvalidCredential",
    "Locked",
    "NotFound",
    "UntrustedSocket",
]

# imported on first use: a connector that imports this package but fetches no key
# in a run pays no msgpack (~7 ms, as much as the interpreter's own start)
_LAZY = {
    "Client": "client._sync",
    "AsyncClient": "client.aio",
    "CredentialService": "client.service",
    "CredentialMigrationTool": "client.service",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'client' has no attribute {name!r}")
    # __import__ rather than importlib.import_module: importlib brings warnings (~1 ms)
    return getattr(__import__(module, fromlist=[name]), name)
