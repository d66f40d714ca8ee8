"""A keyring backend that keeps passwords in the credential agent.

Rules of this module:
- it is the one client module that imports ``keyring``, and nothing imports it:
  keyring loads it when it is selected (``PYTHON_KEYRING_BACKEND`` or
  ``keyringrc.cfg``) or through the ``keyring.backends`` entry point, so
  ``import client`` still loads no keyring;
- (service, username) map to agent names through ``client.keyring_names``, losing
  no character; the originals are kept in the credential's metadata too;
- the agent's errors become keyring's (``KeyringLocked``, ``PasswordSetError``,
  ``PasswordDeleteError``, ``KeyringError``), without values.

Priority: -1 by default, below keyring's ``fail`` backend (0). So keyring's
automatic choice never picks it and its chainer never includes it: installing
credential-agent never takes over a user's OS keystore. Select it explicitly::

    PYTHON_KEYRING_BACKEND=client.keyring_backend.AgentKeyring twine upload dist/*

or set ``CREDENTIAL_AGENT_KEYRING_PRIORITY`` (e.g. ``20``) to let automatic
selection prefer it.
"""

from __future__ import annotations

import os
from typing import Final

import keyring.backend
import keyring.credentials
import keyring.errors

from client import errors, keyring_names
from client.sync import Client

__all__ = ["AgentKeyring", "DEFAULT_PRIORITY", "PRIORITY_ENV"]

PRIORITY_ENV: Final = "CREDENTIAL_AGENT_KEYRING_PRIORITY"
DEFAULT_PRIORITY: Final = -1.0


def _priority() -> float:
    raw = os.environ.get(PRIORITY_ENV, "")
    try:
        return float(raw) if raw else DEFAULT_PRIORITY
    except ValueError:
        return DEFAULT_PRIORITY


def _translate(e: errors.AgentError, fallback: type[Exception]) -> Exception:
    if isinstance(e, errors.Locked):
        return keyring.errors.KeyringLocked(e.message)
    if isinstance(e, errors.AgentUnavailable):
        return keyring.errors.KeyringError(e.message)
    return fallback(e.message)


class AgentKeyring(keyring.backend.KeyringBackend):
    """Passwords in the credential agent's vault, one credential per (service, username)."""

    priority = _priority()

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._client: Client | None = None

    def __repr__(self) -> str:
        return "AgentKeyring()"

    def _agent(self) -> Client:
        if self._client is None:
            self._client = Client()
        return self._client

    def get_password(self, service: str, username: str) -> str | None:
        platform, ctype = keyring_names.entry_for(service, username)
        try:
            return self._agent().get(platform, ctype)
        except errors.NotFound:
            return None
        except errors.AgentError as e:
            raise _translate(e, keyring.errors.KeyringError) from None

    def set_password(self, service: str, username: str, password: str) -> None:
        platform, ctype = keyring_names.entry_for(service, username)
        metadata = {"keyring_service": service, "keyring_username": username}
        try:
            # a password is whatever the tool chose: no platform rule applies
            self._agent().store(platform, password, ctype, metadata, validate=False)
        except errors.AgentError as e:
            raise _translate(e, keyring.errors.PasswordSetError) from None

    def delete_password(self, service: str, username: str) -> None:
        platform, ctype = keyring_names.entry_for(service, username)
        try:
            self._agent().delete(platform, ctype)
        except errors.AgentError as e:
            raise _translate(e, keyring.errors.PasswordDeleteError) from None

    def get_credential(self, service: str, username: str | None) -> keyring.credentials.Credential | None:
        """With no username: the first credential stored for ``service`` (as keyring's own backends)."""
        if username is not None:
            password = self.get_password(service, username)
            return None if password is None else keyring.credentials.SimpleCredential(username, password)
        platform = keyring_names.platform_for(service)
        try:
            entries = [e for e in self._agent().list() if e["platform"] == platform]
            for entry in entries:
                name = (entry.get("metadata") or {}).get("keyring_username")
                if name is None:
                    name = keyring_names.decode_type(entry["credential_type"])
                if name is not None:
                    password = self._agent().get(platform, entry["credential_type"])
                    return keyring.credentials.SimpleCredential(name, password)
        except errors.AgentError as e:
            raise _translate(e, keyring.errors.KeyringError) from None
        return None
