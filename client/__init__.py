"""Client library of the credential agent: connectors import this, never keyring.

``import client`` loads only the standard library: no msgpack, keyring,
cryptography or asyncio. ``Client`` (and with it msgpack) and ``AsyncClient``
(and asyncio) are imported on first use.

Rules of this package:
- a module named ``_x`` is private to this package: only ``client`` modules import
  it (``_ops``, ``_autostart``, ``_pipe``, ``_profile``, ``_sources``). A module the
  agent or a program may import has a public name (``sync``, ``aio``, ``protocol``,
  ``errors``, ``paths``, ``config``, ``transport``, ``messages``, ``spawn``,
  ``variables``, ``win32``, ...);
- a ``_name`` inside a module is private to its file: no other module uses it;
- ``__all__`` below is the API of ``import client``; ``Client`` lives in
  ``client.sync`` beside ``AsyncClient`` in ``client.aio``.
"""

from __future__ import annotations

from client.errors import (
    AgentError,
    AgentTimeout,
    AgentUnavailable,
    ConfigError,
    Expired,
    InvalidCredential,
    InvalidToken,
    Locked,
    NotFound,
    UntrustedSocket,
)

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing would weigh on every connector
if TYPE_CHECKING:
    from typing import Any

    from client.aio import AsyncClient, acredentials_for
    from client.service import CredentialMigrationTool, CredentialService, SecureStorage
    from client.sync import Client

__all__ = [
    "Client",
    "AsyncClient",
    "credentials_for",
    "acredentials_for",
    "CredentialService",
    "CredentialMigrationTool",
    "SecureStorage",
    "AgentError",
    "AgentTimeout",
    "AgentUnavailable",
    "ConfigError",
    "Expired",
    "InvalidCredential",
    "InvalidToken",
    "Locked",
    "NotFound",
    "UntrustedSocket",
]

# imported on first use: a connector that imports this package but fetches no key
# in a run pays no msgpack (benchmarks/run.py times both imports)
_LAZY = {
    "Client": "client.sync",
    "AsyncClient": "client.aio",
    "acredentials_for": "client.aio",
    "CredentialService": "client.service",
    "CredentialMigrationTool": "client.service",
    "SecureStorage": "client.service",
}


def credentials_for(platform: str, *, client: Client | None = None) -> dict[str, str]:
    """Every credential of ``platform``, keyed by type with ``-`` as ``_``.

    ``{"api_key": "..."}`` for a platform with one API key: the dict a connector's
    ``connect(credentials)`` takes. Raises ``NotFound`` when none is stored.
    """
    if client is not None:
        return client.credentials_for(platform)
    from client.sync import Client

    with Client() as c:
        return c.credentials_for(platform)


def __dir__() -> list[str]:
    """The names of ``__all__`` too, though six of them load only on first use."""
    return sorted({*globals(), *__all__})


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'client' has no attribute {name!r}")
    # __import__ rather than importlib.import_module, which would import warnings too
    return getattr(__import__(module, fromlist=[name]), name)
