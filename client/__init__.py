"""Client library of the credential agent: connectors import this, never keyring.

``import client`` loads only the standard library and msgpack: no keyring, no
cryptography, no asyncio (``AsyncClient`` is imported on first use).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from client._sync import Client
from client.errors import (
    AgentError,
    AgentTimeout,
    AgentUnavailable,
    Expired,
    InvalidCredential,
    Locked,
    NotFound,
    UntrustedSocket,
)

if TYPE_CHECKING:
    from client.aio import AsyncClient, acredentials_for
    from client.service import CredentialMigrationTool, CredentialService

__all__ = [
    "Client",
    "AsyncClient",
    "credentials_for",
    "acredentials_for",
    "CredentialService",
    "CredentialMigrationTool",
    "AgentError",
    "AgentTimeout",
    "AgentUnavailable",
    "Expired",
    "InvalidCredential",
    "Locked",
    "NotFound",
    "UntrustedSocket",
]

_LAZY = {
    "AsyncClient": "client.aio",
    "acredentials_for": "client.aio",
    "CredentialService": "client.service",
    "CredentialMigrationTool": "client.service",
}


def credentials_for(platform: str, *, client: Client | None = None) -> dict[str, str]:
    """Every credential of ``platform``, keyed by type with ``-`` as ``_``.

    ``{"api_key": "..."}`` for a platform with one API key: the dict a connector's
    ``connect(credentials)`` takes. Raises ``NotFound`` when none is stored.
    """
    if client is not None:
        return client.credentials_for(platform)
    with Client() as c:
        return c.credentials_for(platform)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'client' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
