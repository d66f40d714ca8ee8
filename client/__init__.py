"""Client library of the credential agent: connectors import this, never keyring.

``import client`` loads only the standard library and msgpack: no keyring, no
cryptography, no asyncio (``AsyncClient`` is imported on first use).
"""

from __future__ import annotations

from client._sync import Client
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

_LAZY = {
    "AsyncClient": "client.aio",
    "CredentialService": "client.service",
    "CredentialMigrationTool": "client.service",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'client' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
