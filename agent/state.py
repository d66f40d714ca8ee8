"""The agent's state: the lock state machine and the plaintext cache, one ``Entry`` per credential.

Rules of this module:
- plaintext (values and metadata) lives in memory only while unlocked; ``lock``
  drops the key and every cached plaintext at once (best effort in Python: the
  str objects are freed, not zeroed);
- the event loop never blocks: the store runs on one storage thread (which also
  serialises writes), scrypt and the keystore run in worker threads;
- the hot path (``get`` while unlocked) is a dict lookup, no I/O, no decryption;
- the key source (``agent.keys``) and the store (``agent.stores``) are reached
  through their protocols: nothing here branches on which one it is.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import logging
import math
import os
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, Final, TypeVar

from agent import audit, canonical, crypto, faults, keys, rotation
from agent.autolock import AutoLock
from agent.config import Options
from agent.crypto import seal, unseal
from agent.remotes import NO_REMOTES, Hooks
from agent.replacing import KEEP, Keep, kept_fields
from agent.stores import Row, Store, VaultMeta
from client import errors, protocol
from client.validation import check_credential, check_metadata, check_name

__all__ = ["Agent", "Entry", "Key", "KEEP", "check_expires"]

log = logging.getLogger("agent.state")

T = TypeVar("T")
Key = tuple[str, str]
# Passphrase unlocks waiting their turn; more get `busy`, not minutes of queued delays.
MAX_WAITING_UNLOCKS: Final = 16


@dataclasses.dataclass(frozen=True, slots=True, repr=False)
class Entry:
    """One credential as the agent holds it: its times always, its plaintext only while unlocked."""

    created: float
    updated: float
    expires: float | None
    value: str | None = None
    metadata: dict[str, Any] | None = None
    corrupt: bool = False  # failed its integrity check: nothing of it is held

    def __repr__(self) -> str:
        held = "corrupt" if self.corrupt else "sealed" if self.value is None else "<value held>"
        return f"Entry(created={self.created!r}, updated={self.updated!r}, expires={self.expires!r}, {held})"

    def sealed(self) -> Entry:
        return Entry(self.created, self.updated, self.expires)


def check_expires(expires: float) -> None:
    """A Unix time every client can format; never echoes the value."""
    if not (math.isfinite(expires) and 0 <= expires <= protocol.MAX_EXPIRES):
        raise errors.BadRequest(
            f"expires_at must be a Unix time between 0 and {protocol.MAX_EXPIRES:.0f} (year 9999)"
        )


class Agent:
    def __init__(
        self,
        options: Options,
        *,
        hardening: dict[str, bool] | None = None,
        loop_name: str = "asyncio",
        store: Store | None = None,
    ) -> None:
        self.options = options
        self.hardening = hardening or {}
        self.loop_name = loop_name
        self.started = time.monotonic()
        if store is None:
            from agent.stores.sqlite import SqliteStore

            store = SqliteStore(options.vault)
        self.store = store
        self._db = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="vault")
        self.audit = audit.AuditLog(self.store, self._db, options.audit_keep)
        self.entries: dict[Key, Entry] = {
            (r.platform, r.credential_type): Entry(r.created, r.updated, r.expires) for r in self.store.rows()
        }
        self.meta = VaultMeta(self.store, self.db)
        self._source: keys.KeySource | None = None  # made on first need, from the vault's meta
        self._storage: crypto.SecureStorage | None = None
        self.locked_by_user = False
        # not explicit: a keystore vault unlocks itself again on the next use
        self.autolock = AutoLock(options.idle_timeout, options.max_unlocked,
                                 lambda: self.lock(explicit=False, reason="auto-lock timer"))
        self._write_lock: asyncio.Lock | None = None
        self._unlock_lock: asyncio.Lock | None = None
        self._lock_epoch = 0  # counts explicit locks: an unlock in flight yields to a later lock
        self.unlocks_waiting = 0
        self.on_stop: Callable[[], None] = lambda: None
        self.remotes: Hooks = NO_REMOTES  # team vaults (agent.remotes.team); local names shadow theirs

    def __repr__(self) -> str:
        return f"Agent(vault={str(self.options.vault)!r}, locked={self.locked}, credentials={len(self.entries)})"

    # --- small helpers --------------------------------------------------------
    @property
    def locked(self) -> bool:
        return self._storage is None

    @property
    def key_source(self) -> str | None:
        source = self.meta.get("key_source")
        return source.decode() if source else None

    @property
    def initialized(self) -> bool:
        return self.key_source is not None

    def source(self) -> keys.KeySource:
        """The vault's key source; ``NotInitialized`` before ``init``."""
        if self._source is None:
            name = self.key_source
            if name is None:
                raise errors.NotInitialized()
            self._source = keys.source_for(name, self.meta, self.options.keystore_deadline)
        return self._source

    def _locks(self) -> tuple[asyncio.Lock, asyncio.Lock]:
        if self._write_lock is None or self._unlock_lock is None:
            self._write_lock, self._unlock_lock = asyncio.Lock(), asyncio.Lock()
        return self._write_lock, self._unlock_lock

    async def db(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a store call on the storage thread."""
        return await asyncio.get_running_loop().run_in_executor(self._db, fn, *args)

    def close(self) -> None:
        self.lock(explicit=False, reason="shutdown")
        self.audit.flush()  # queued before the shutdown below, so written before exit
        self._db.shutdown(wait=True)
        self.store.close()

    # --- lock state -------------------------------------------------------------
    def lock(self, *, explicit: bool = True, reason: str = "request") -> None:
        self._storage = None
        if self._source is not None:
            self._source.forget()
        self.entries = {key: entry.sealed() for key, entry in self.entries.items()}
        self.remotes.forget()
        if explicit:
            self.locked_by_user = True
            self._lock_epoch += 1
        self.autolock.stop()
        log.info("locked (%s)", reason)

    def _set_unlocked(self, storage: crypto.SecureStorage, rows: list[Row]) -> None:
        entries = {}
        for r in rows:
            key = (r.platform, r.credential_type)
            try:  # both fields or neither: a corrupt entry holds nothing
                value = unseal(storage, r.platform, r.credential_type, "value", r.value)
                metadata = unseal(storage, r.platform, r.credential_type, "metadata", r.metadata)
                entries[key] = Entry(r.created, r.updated, r.expires, value, metadata)
            except errors.IntegrityError:
                log.error("credential %s/%s failed its integrity check", r.platform, r.credential_type)
                entries[key] = Entry(r.created, r.updated, r.expires, corrupt=True)
        self.entries = entries
        self._storage = storage
        self.locked_by_user = False
        self.remotes.unlocked(storage)
        self.autolock.start()

    def _check_key(self, storage: crypto.SecureStorage) -> None:
        token = self.meta.get("key_check")
        if token is None or unseal(storage, "", "", "key-check", token) != self.meta.vault_id():
            raise errors.IntegrityError()

    def _open_with(self, key: bytes) -> tuple[crypto.SecureStorage, list[Row]]:
        """On the storage thread: check ``key`` opens this vault, read every row (names made canonical)."""
        storage = crypto.SecureStorage(key)
        try:
            self._check_key(storage)
        except errors.IntegrityError:
            raise errors.IntegrityError(
                "the master key does not open this vault (a different key in the keystore?)"
            ) from None
        return storage, canonical.migrate(self.store, storage, self.store.rows())

    def _check_epoch(self, epoch: int) -> None:
        if self._lock_epoch != epoch:
            log.info("an unlock yielded to a lock requested while it ran")
            raise errors.Locked("the agent was locked by request while it was unlocking; it stays locked")

    async def _open(self, key: bytes, epoch: int) -> None:
        storage, rows = await self.db(self._open_with, key)
        self._check_epoch(epoch)
        self._set_unlocked(storage, rows)
        log.info("unlocked (%s)", self.key_source)

    async def unlock(self, passphrase: str | None = None) -> None:
        source = self.source()
        epoch = self._lock_epoch  # a lock (request, SIGUSR1) from now on wins over this unlock
        _, unlock_lock = self._locks()
        if not self.locked:
            self.locked_by_user = False
        elif source.needs_passphrase:
            if self.unlocks_waiting >= MAX_WAITING_UNLOCKS:
                raise errors.Busy(f"{MAX_WAITING_UNLOCKS} unlock attempts are already waiting; try again later")
            self.unlocks_waiting += 1
            try:
                async with unlock_lock:  # one attempt at a time: no parallel guessing
                    if self.locked:
                        await self._open(await source.open(passphrase), epoch)
                    else:
                        self.locked_by_user = False
            finally:
                self.unlocks_waiting -= 1
        else:
            key = await source.open(passphrase)  # concurrent callers share one keystore fetch
            self._check_epoch(epoch)
            async with unlock_lock:
                if self.locked:
                    await self._open(key, epoch)
        await source.tidy()  # what an interrupted rotation left, if anything

    async def storage(self) -> crypto.SecureStorage:
        """The unlocked storage, unlocking a keystore vault on first need (gpg-agent style)."""
        if self._storage is not None:
            return self._storage
        if self.source().needs_passphrase or self.locked_by_user:
            raise errors.Locked()
        await self.unlock()
        assert self._storage is not None
        return self._storage

    # --- init and key rotation ----------------------------------------------------
    async def init(self, key_source: str | None, passphrase: str | None) -> dict[str, Any]:
        keys.check_choice(key_source, passphrase)
        epoch = self._lock_epoch
        _, unlock_lock = self._locks()
        deadline = self.options.keystore_deadline
        async with unlock_lock:
            if self.initialized:
                raise errors.AlreadyExists(f"a vault already exists at {self.options.vault}; it was left untouched")
            name = key_source or await keys.default_choice(passphrase, deadline)
            source = keys.source_for(name, self.meta, deadline)
            key = crypto.generate_key()
            vault_id = os.urandom(8).hex()
            storage = crypto.SecureStorage(key)
            meta = {
                "schema": b"1",
                "vault_id": vault_id.encode(),
                "key_source": name.encode(),
                "key_check": seal(storage, "", "", "key-check", vault_id),
            }
            created, backend = await source.create(key, vault_id, passphrase)
            await self.meta.save({**meta, **created})
            self._source = source
            rows = await self.db(self.store.rows)
            if self._lock_epoch != epoch:
                log.info("initialised a vault (key source %s), left locked by a lock request", name)
                raise errors.Locked("the vault was created, but the agent was locked by request meanwhile; "
                                    "run `agent unlock`")
            self._set_unlocked(storage, rows)
        log.info("initialised a vault (key source %s)", name)
        return {"key_source": name, "backend": backend, "vault": str(self.options.vault)}

    async def rotate_key(self, passphrase: str | None = None, new_passphrase: str | None = None) -> dict[str, Any]:
        """Re-seal every row under a new master key; the order of steps is agent.rotation's."""
        source = self.source()
        if new_passphrase is not None and not new_passphrase:
            raise errors.BadRequest("the new passphrase is empty")
        old = await self.storage()
        write_lock, unlock_lock = self._locks()
        async with unlock_lock, write_lock:
            if self._storage is not old:
                raise errors.Locked("the agent was locked during the rotation; nothing was changed")
            new_key = crypto.generate_key()
            new = crypto.SecureStorage(new_key)
            meta: dict[str, bytes | None] = {"key_check": seal(new, "", "", "key-check", self.meta.vault_id())}
            if source.needs_passphrase:
                # the agent is unlocked already, but replacing the key is the one step that
                # should need the passphrase again (as changing a password does)
                if passphrase is None:
                    raise errors.BadPassphrase(
                        f"rotating the key of a {source.name} vault needs its current passphrase")
                self._check_key(crypto.SecureStorage(await source.open(passphrase)))
            meta.update(await source.rewrap(new_key, new_passphrase or passphrase))
            count = await self.db(rotation.reseal_all, self.store, old, new, meta)  # one transaction
            self.meta.committed(meta)
            if self._storage is old:  # a `lock` meanwhile holds: the next unlock opens with the new key
                self._storage = new
            faults.point("rotate:after-vault")
        log.info("rotated the master key (%d credentials re-encrypted)", count)
        await source.tidy()
        return {"credentials": count, "key_source": self.key_source}

    # --- credentials ---------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def _writing(self) -> AsyncIterator[crypto.SecureStorage]:
        """Hold the write lock, with the storage that is current inside it.

        A keystore vault unlocks itself before the lock is taken: rotation takes
        unlock_lock then write_lock, so unlocking while holding write_lock would
        deadlock. Inside, the storage is read again: a rotation that held the lock
        meanwhile has switched to a new key (rows sealed under the old one would be
        lost), and a lock meanwhile has dropped it.
        """
        await self.storage()
        write_lock, _ = self._locks()
        async with write_lock:
            storage = self._storage
            if storage is None:
                raise errors.Locked("the agent was locked while this request waited; nothing was changed")
            yield storage

    def touch(self) -> None:
        """A use of the credentials: the idle timer starts again."""
        self.autolock.last_use = time.monotonic()

    def get_cached(self, key: Key) -> str:
        """The hot path: a dict lookup while unlocked."""
        entry = self.entries.get(key)
        value = None if entry is None else entry.value
        if value is None:
            check_name(key[0])
            check_name(key[1], "credential type")
            if entry is not None and entry.corrupt:
                raise errors.IntegrityError()
            raise errors.NotFound(f"no credential {key[0]}/{key[1]}")
        self.autolock.last_use = time.monotonic()
        return value

    async def get(self, key: Key) -> str:
        await self.storage()
        return self.get_cached(key)

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
    ) -> dict[str, Any]:
        """Store (``must_exist`` false) or update a credential. What it keeps of the one
        it replaces is ``agent.replacing.kept_fields``'s: an update keeps the metadata and
        expiry not given, a store only with ``keep``; ``merge`` lays metadata over the old."""
        key = (check_name(key[0]), check_name(key[1], "credential type"))
        if len(value) > protocol.MAX_VALUE:
            raise errors.BadRequest(f"the value is longer than {protocol.MAX_VALUE} characters")
        if metadata is not None:
            check_metadata(metadata)
        if expires_at is not None and not isinstance(expires_at, Keep):
            check_expires(expires_at)
        if validate:
            check_credential(key[0], value, key[1])
        async with self._writing() as storage:
            old = self.entries.get(key)
            if must_exist and old is None:
                raise errors.NotFound(f"no credential {key[0]}/{key[1]} to update")
            kept, expires_at = kept_fields(f"{key[0]}/{key[1]}", None if old is None else (old.metadata, old.expires),
                                           metadata, expires_at, keep=keep or must_exist, merge=merge)
            if merge or keep:
                check_metadata(kept)  # the old and the given together must still fit
            now = time.time()
            row = Row(
                key[0],
                key[1],
                seal(storage, key[0], key[1], "value", value),
                seal(storage, key[0], key[1], "metadata", kept),
                old.created if old else now,
                now,
                expires_at,
            )
            await self.db(self.store.put, row)
            entry = Entry(row.created, row.updated, row.expires)
            # not locked meanwhile: the entry holds its plaintext
            self.entries[key] = dataclasses.replace(entry, value=value, metadata=kept) \
                if self._storage is storage else entry
        self.autolock.last_use = time.monotonic()
        return {"created": old is None}

    async def delete(self, key: Key) -> None:
        check_name(key[0])
        check_name(key[1], "credential type")
        async with self._writing():
            if not await self.db(self.store.delete, *key):
                raise errors.NotFound(f"no credential {key[0]}/{key[1]}")
            self.entries.pop(key, None)
        self.autolock.last_use = time.monotonic()

    def describe(self, key: Key) -> dict[str, Any]:
        entry = self.entries[key]
        described: dict[str, Any] = {
            "platform": key[0],
            "credential_type": key[1],
            "created": entry.created,
            "updated": entry.updated,
            "expires_at": entry.expires,
        }
        if not self.locked:
            described["metadata"] = entry.metadata
        return described

    def list(self, offset: int = 0, limit: int | None = None) -> list[dict[str, Any]]:
        """Every credential's name and timestamps, plus metadata while unlocked; never values.

        ``offset``/``limit`` select one page of the listing in name order."""
        if offset < 0 or (limit is not None and limit < 0):
            raise errors.BadRequest("list offset and limit must not be negative")
        names = sorted(self.entries)
        if offset or limit is not None:
            names = names[offset:] if limit is None else names[offset : offset + limit]
        return [self.describe(k) for k in names]

    async def metadata(self, key: Key) -> dict[str, Any]:
        check_name(key[0])
        check_name(key[1], "credential type")
        await self.storage()
        entry = self.entries.get(key)
        if entry is None:
            raise errors.NotFound(f"no credential {key[0]}/{key[1]}")
        if entry.corrupt:
            raise errors.IntegrityError()
        return self.describe(key)
