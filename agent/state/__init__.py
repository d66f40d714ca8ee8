"""The vault's state, and everything that changes it.

Rule 1 of this package: everything that changes the agent's state (the lock state,
the held entries, the master key and its home, the vault's rows and meta) lives in
this package, and each change lives in the one module of its concept:

- ``lockstate``: the lock state machine (lock, unlock, the unlocked storage, the
  explicit-lock epoch) and the lock order, ``writing()`` and ``exclusive()``; the only
  module that assigns the lock state: the others call its public methods;
- ``entry``: one credential as the agent holds it, and what an unlock opens;
- ``credentials``: get, write, delete, rename, list, metadata, expiry, and what a
  replace keeps;
- ``history``: the previous values a replace or a deletion kept, read back and restored;
- ``masterkey``: the master key's life (init, rotate, rekey, recover, the recovery
  code), with the orders that make each crash-safe;
- ``secure_storage``: the original ``SecureStorage`` API's encrypt and decrypt;
- ``presence``: proof that the user is there (the passphrase, a keystore vault's PIN);
- ``resealing``: what runs on the storage thread over every row (a rotation's
  re-seal, the canonical-name migration).

``Agent`` is the face the handlers and the daemon use: the lock state with one
method per operation, each a one-line call into the module that owns it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agent.state import credentials, history, masterkey, presence, secure_storage
from agent.state.credentials import KEEP, Keep, check_expires, check_page
from agent.state.entry import Entry, Key
from agent.state.lockstate import LockState
from agent.stores import NOBODY, Who

__all__ = ["Agent", "Entry", "Key", "KEEP", "Keep", "check_expires", "check_page"]

Rows = list[dict[str, Any]]  # (``list`` is a method name inside Agent)


class Agent(LockState):
    """The agent's state and its operations (the modules above do the work)."""

    # --- credentials ---------------------------------------------------------------------
    def get_cached(self, key: Key) -> str:
        return credentials.get_cached(self, key)

    async def get(self, key: Key) -> str:
        return await credentials.get(self, key)

    async def write(
        self,
        key: Key,
        value: str,
        *,
        metadata: Mapping[str, Any] | None = None,
        expires_at: float | Keep | None = KEEP,
        validate: bool = True,
        must_exist: bool = False,
        keep: bool = False,
        merge: bool = False,
        by: Who = NOBODY,
    ) -> dict[str, Any]:
        return await credentials.write(
            self,
            key,
            value,
            metadata=metadata,
            expires_at=expires_at,
            validate=validate,
            must_exist=must_exist,
            keep=keep,
            merge=merge,
            by=by,
        )

    async def delete(self, key: Key, by: Who = NOBODY) -> None:
        await credentials.delete(self, key, by)

    async def rename(self, old: Key, new: Key, *, replace: bool = False, by: Who = NOBODY) -> dict[str, Any]:
        return await credentials.rename(self, old, new, replace=replace, by=by)

    def describe(self, key: Key) -> dict[str, Any]:
        return credentials.describe(self, key)

    def list(self, offset: int = 0, limit: int | None = None, after: Key | None = None) -> list[dict[str, Any]]:
        return credentials.listing(self, offset, limit, after)

    async def metadata(self, key: Key) -> dict[str, Any]:
        return await credentials.metadata(self, key)

    # --- previous values -------------------------------------------------------------------
    async def history(self, key: Key | None, limit: int | None = None) -> Rows:
        return await history.listing(self, key, limit)

    async def history_value(self, key: Key, version: int) -> dict[str, Any]:
        return await history.value(self, key, version)

    async def history_restore(self, key: Key, version: int, by: Who = NOBODY) -> dict[str, Any]:
        return await history.restore(self, key, version, by)

    # --- the master key --------------------------------------------------------------------
    async def init(self, key_source: str | None, passphrase: str | None, recovery_code: bool = False) -> dict[str, Any]:
        return await masterkey.init(self, key_source, passphrase, recovery_code)

    async def rotate_key(self, passphrase: str | None = None, new_passphrase: str | None = None) -> dict[str, Any]:
        return await masterkey.rotate_key(self, passphrase, new_passphrase)

    async def rekey(self, name: str, passphrase: str | None, new_passphrase: str | None) -> dict[str, Any]:
        return await masterkey.rekey(self, name, passphrase, new_passphrase)

    async def make_recovery_code(self, passphrase: str | None) -> dict[str, Any]:
        return await masterkey.make_recovery_code(self, passphrase)

    async def drop_recovery_code(self) -> bool:
        return await masterkey.drop_recovery_code(self)

    async def recover(self, code: str, name: str, new_passphrase: str | None) -> dict[str, Any]:
        return await masterkey.recover(self, code, name, new_passphrase)

    async def finish_rekey(self) -> bool:
        """What a switch of key source that crashed left of the old source, removed now."""
        return await masterkey.finish(self)

    @property
    def rekey_unfinished(self) -> bool:
        return masterkey.unfinished(self)

    @property
    def has_recovery_code(self) -> bool:
        return masterkey.has_recovery_code(self)

    # --- proof that the user is there --------------------------------------------------
    async def prove_presence(self, secret: str | None) -> None:
        await presence.prove(self, secret)

    async def set_approval_pin(self, pin: str, current: str | None) -> None:
        await presence.set_pin(self, pin, current)

    @property
    def has_approval_pin(self) -> bool:
        return presence.has_pin(self)

    @property
    def approval_pin_failures(self) -> int:
        return presence.pin_failures(self)

    # --- the original SecureStorage API ----------------------------------------------------
    async def encrypt(self, data: str) -> bytes:
        return await secure_storage.encrypt(self, data)

    async def decrypt(self, token: bytes) -> str:
        return await secure_storage.decrypt(self, token)
