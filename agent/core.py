"""The agent's state: the vault, the lock state, the plaintext cache, auto-lock.

Rules of this module:
- plaintext (values and metadata) lives in memory only while unlocked; ``lock``
  drops the key and every cached plaintext at once (best effort in Python: the
  str objects are freed, not zeroed);
- the event loop never blocks: SQLite runs on one storage thread (which also
  serialises writes), scrypt and the keystore run in worker threads;
- the hot path (``get`` while unlocked) is a dict lookup, no I/O, no decryption.
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
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, Final, TypeVar

import msgpack

from agent import audit, crypto, keystore
from agent.vault import Row, Vault, seal, unseal
from client import errors, protocol
from client.validation import DEFAULT_TYPE, check_credential, check_metadata, check_name

__all__ = ["Agent", "Options"]

log = logging.getLogger("agent.core")

# ssh-agent: 0.1 s per consecutive failure, capped at 10 s
_FAIL_DELAY_STEP: Final = 0.1
_FAIL_DELAY_MAX: Final = 10.0
# expires_at is a Unix time; 9999-12-31T23:59:59Z is the last one every client can format
MAX_EXPIRES: Final = 253402300799.0

T = TypeVar("T")
Key = tuple[str, str]


@dataclasses.dataclass(frozen=True)
class Options:
    socket: Path
    vault: Path
    idle_timeout: float = 0.0  # seconds without credential use before locking; 0 = off
    max_unlocked: float = 0.0  # seconds unlocked before locking, whatever the use; 0 = off
    keystore_deadline: float = keystore.DEFAULT_DEADLINE
    socket_activated: bool = False  # the socket came from systemd (LISTEN_FDS)
    max_connections: int = 512  # open client connections; 0 = no cap (see agent.server)
    connection_idle_timeout: float = 300.0  # seconds a silent connection stays open; 0 = off
    audit_keep: int = audit.DEFAULT_KEEP  # newest audit rows kept; 0 = no audit log


@dataclasses.dataclass(frozen=True)
class Info:
    """What is known of a credential while locked: its name and timestamps."""

    created: float
    updated: float
    expires: float | None


def check_expires(expires: float) -> None:
    """A Unix time every client can format; never echoes the value."""
    if not (math.isfinite(expires) and 0 <= expires <= MAX_EXPIRES):
        raise errors.BadRequest(f"expires_at must be a Unix time between 0 and {MAX_EXPIRES:.0f} (year 9999)")


class Agent:
    def __init__(
        self, options: Options, *, hardening: dict[str, bool] | None = None, loop_name: str = "asyncio"
    ) -> None:
        self.options = options
        self.hardening = hardening or {}
        self.loop_name = loop_name
        self.started = time.monotonic()
        self.vault = Vault(options.vault)
        self._db = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="vault")
        self.audit = audit.AuditLog(self.vault, self._db, options.audit_keep)
        self.index: dict[Key, Info] = {
            (r.platform, r.credential_type): Info(r.created, r.updated, r.expires) for r in self.vault.rows()
        }
        # meta changes only at init (and key rotation): read once, kept in memory
        self.meta = self.vault.meta()
        self._storage: crypto.SecureStorage | None = None
        self.values: dict[Key, str] = {}
        self.metadata_cache: dict[Key, dict[str, Any]] = {}
        self.corrupt: set[Key] = set()
        self.locked_by_user = False
        self.failures = 0
        self.unlocked_at = 0.0
        self.last_use = 0.0
        self._write_lock: asyncio.Lock | None = None
        self._unlock_lock: asyncio.Lock | None = None
        self._key_fetch: asyncio.Future[bytes | None] | None = None
        self._lock_epoch = 0  # counts explicit locks: an unlock in flight yields to a later lock
        self._autolock: asyncio.TimerHandle | None = None
        self.on_stop: Callable[[], None] = lambda: None

    def __repr__(self) -> str:
        return f"Agent(vault={str(self.options.vault)!r}, locked={self.locked}, credentials={len(self.index)})"

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

    def _locks(self) -> tuple[asyncio.Lock, asyncio.Lock]:
        if self._write_lock is None or self._unlock_lock is None:
            self._write_lock, self._unlock_lock = asyncio.Lock(), asyncio.Lock()
        return self._write_lock, self._unlock_lock

    async def db(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a vault call on the storage thread."""
        return await asyncio.get_running_loop().run_in_executor(self._db, fn, *args)

    def _account(self) -> str:
        # key rotation stores each new key under a new account, named in the vault
        account = self.meta.get("key_account")
        return account.decode() if account else f"master-key-{self.meta['vault_id'].decode()}"

    def close(self) -> None:
        self.lock(explicit=False, reason="shutdown")
        self.audit.flush()  # queued before the shutdown below, so written before exit
        self._db.shutdown(wait=True)
        self.vault.close()

    # --- lock state -------------------------------------------------------------
    def lock(self, *, explicit: bool = True, reason: str = "request") -> None:
        self._storage = None
        self._key_fetch = None  # a finished fetch holds the key bytes as its result
        self.values.clear()
        self.metadata_cache.clear()
        self.corrupt.clear()
        if explicit:
            self.locked_by_user = True
            self._lock_epoch += 1
        if self._autolock is not None:
            self._autolock.cancel()
            self._autolock = None
        log.info("locked (%s)", reason)

    def _set_unlocked(self, storage: crypto.SecureStorage, rows: list[Row]) -> None:
        values, metas, corrupt = {}, {}, set()
        for r in rows:
            key = (r.platform, r.credential_type)
            try:  # both fields or neither: a row in `corrupt` has nothing cached
                value = unseal(storage, r.platform, r.credential_type, "value", r.value)
                metas[key] = unseal(storage, r.platform, r.credential_type, "metadata", r.metadata)
                values[key] = value
            except errors.IntegrityError:
                log.error("credential %s/%s failed its integrity check", r.platform, r.credential_type)
                corrupt.add(key)
        self.index = {(r.platform, r.credential_type): Info(r.created, r.updated, r.expires) for r in rows}
        self.values, self.metadata_cache, self.corrupt = values, metas, corrupt
        self._storage = storage
        self.locked_by_user = False
        self.failures = 0
        self.unlocked_at = self.last_use = time.monotonic()
        self._schedule_autolock()

    def _schedule_autolock(self) -> None:
        deadline = self._autolock_deadline()
        if deadline is None:
            return
        loop = asyncio.get_running_loop()
        self._autolock = loop.call_at(loop.time() + max(0.0, deadline - time.monotonic()), self._autolock_fire)

    def _autolock_deadline(self) -> float | None:
        """The monotonic time at which the agent locks itself, if a timer is on."""
        candidates = []
        if self.options.idle_timeout > 0:
            candidates.append(self.last_use + self.options.idle_timeout)
        if self.options.max_unlocked > 0:
            candidates.append(self.unlocked_at + self.options.max_unlocked)
        return min(candidates) if candidates else None

    def _autolock_fire(self) -> None:
        self._autolock = None
        if self.locked:
            return
        deadline = self._autolock_deadline()
        if deadline is not None and deadline <= time.monotonic() + 0.001:
            # not explicit: a keyring vault unlocks itself again on the next use
            self.lock(explicit=False, reason="auto-lock timer")
        else:
            self._schedule_autolock()

    def _check_key(self, storage: crypto.SecureStorage) -> None:
        token = self.meta.get("key_check")
        vault_id = self.meta.get("vault_id", b"").decode()
        if token is None or unseal(storage, "", "", "key-check", token) != vault_id:
            raise errors.IntegrityError()

    def _open_with(self, key: bytes) -> tuple[crypto.SecureStorage, list[Row]]:
        """On the storage thread: check ``key`` opens this vault, read every row."""
        storage = crypto.SecureStorage(key)
        try:
            self._check_key(storage)
        except errors.IntegrityError:
            raise errors.IntegrityError(
                "the master key does not open this vault (a different key in the keystore?)"
            ) from None
        return storage, self.vault.rows()

    async def unlock(self, passphrase: str | None = None) -> None:
        if not self.initialized:
            raise errors.NotInitialized()
        epoch = self._lock_epoch  # a lock (request, SIGUSR1) from now on wins over this unlock
        if self.key_source == "keyring":
            await self._unlock_from_keystore(epoch)
        else:
            await self._unlock_with_passphrase(passphrase, epoch)
        if "stale_key_account" in self.meta or "pending_key_account" in self.meta:  # an earlier rotation's
            from agent import rotation

            await rotation.forget_stale_key(self)

    def _check_epoch(self, epoch: int) -> None:
        if self._lock_epoch != epoch:
            log.info("an unlock yielded to a lock requested while it ran")
            raise errors.Locked("the agent was locked by request while it was unlocking; it stays locked")

    async def _unlock_with_passphrase(self, passphrase: str | None, epoch: int) -> None:
        _, unlock_lock = self._locks()
        async with unlock_lock:  # one attempt at a time: no parallel guessing
            if not self.locked:
                self.locked_by_user = False
                return
            key = await self._unwrap(passphrase)
            storage, rows = await self.db(self._open_with, key)
            self._check_epoch(epoch)
            self._set_unlocked(storage, rows)
            log.info("unlocked (%s)", self.key_source)

    async def _unlock_from_keystore(self, epoch: int) -> None:
        if not self.locked:
            self.locked_by_user = False
            return
        key = await self._keystore_key()
        self._check_epoch(epoch)
        if key is None:
            raise errors.KeystoreUnavailable(
                "the master key of this vault is missing from the OS keystore; "
                "restore it there, or the vault cannot be opened"
            )
        _, unlock_lock = self._locks()
        async with unlock_lock:
            if self.locked:
                storage, rows = await self.db(self._open_with, key)
                self._check_epoch(epoch)
                self._set_unlocked(storage, rows)
                log.info("unlocked (%s)", self.key_source)

    async def _keystore_key(self) -> bytes | None:
        """The master key from the keystore; concurrent callers share one fetch, so each
        waits at most one deadline even when the keystore hangs (not one per caller)."""
        fetch = self._key_fetch
        if fetch is None:
            fetch = self._key_fetch = asyncio.ensure_future(
                keystore.get_key(self._account(), self.options.keystore_deadline)
            )
            # once done, the future holds the key as its result: the agent lets go of it
            # (the waiters have theirs), so the key does not outlive the unlock in memory
            fetch.add_done_callback(self._forget_key_fetch)
        return await asyncio.shield(fetch)

    def _forget_key_fetch(self, fetch: asyncio.Future[bytes | None]) -> None:
        if self._key_fetch is fetch:
            self._key_fetch = None

    async def _unwrap(self, passphrase: str | None) -> bytes:
        if passphrase is None:
            raise errors.BadPassphrase("this vault is unlocked with its passphrase: run `agent unlock`")
        raw_kdf, wrapped = self.meta.get("kdf"), self.meta.get("wrapped_key")
        if raw_kdf is None or wrapped is None:
            raise errors.IntegrityError("the vault has no wrapped key")
        salt, n, r, p = msgpack.unpackb(raw_kdf)
        try:
            return await asyncio.to_thread(crypto.unwrap_key, wrapped, passphrase, crypto.KdfParams(salt, n, r, p))
        except errors.BadPassphrase:
            self.failures += 1
            delay = min(_FAIL_DELAY_STEP * self.failures, _FAIL_DELAY_MAX)
            log.warning("wrong passphrase (%d consecutive failures); answering in %.1f s", self.failures, delay)
            # the delay holds this caller (and later unlock attempts) only, not other clients
            await asyncio.sleep(delay)
            raise

    async def storage(self) -> crypto.SecureStorage:
        """The unlocked storage, unlocking a keyring vault on first need (gpg-agent style)."""
        if self._storage is not None:
            return self._storage
        self._ensure_can_autounlock()
        await self.unlock()
        assert self._storage is not None
        return self._storage

    def _ensure_can_autounlock(self) -> None:
        if not self.initialized:
            raise errors.NotInitialized()
        if self.key_source != "keyring" or self.locked_by_user:
            raise errors.Locked()

    # --- init ---------------------------------------------------------------------
    async def init(self, key_source: str | None, passphrase: str | None) -> dict[str, Any]:
        if key_source is not None and key_source not in protocol.KEY_SOURCES:
            raise errors.BadRequest("key_source must be 'keyring' or 'passphrase'")
        if key_source == "passphrase" and not passphrase:
            raise errors.BadRequest("a passphrase key source needs a non-empty passphrase")
        epoch = self._lock_epoch
        _, unlock_lock = self._locks()
        async with unlock_lock:
            if self.initialized:
                raise errors.AlreadyExists(f"a vault already exists at {self.options.vault}; it was left untouched")
            if key_source is None:
                # keyring when a real round trip works, else the caller must give a passphrase
                if passphrase:
                    key_source = "passphrase"
                else:
                    await keystore.probe(self.options.keystore_deadline)
                    key_source = "keyring"
            key = crypto.generate_key()
            vault_id = os.urandom(8).hex()  # as secrets.token_hex(8), without hmac/hashlib in RSS
            storage = crypto.SecureStorage(key)
            meta = {
                "schema": b"1",
                "vault_id": vault_id.encode(),
                "key_source": key_source.encode(),
                "key_check": seal(storage, "", "", "key-check", vault_id),
            }
            backend = None
            if key_source == "keyring":
                account = f"master-key-{vault_id}"
                await keystore.set_key(account, key, self.options.keystore_deadline)
                if await keystore.get_key(account, self.options.keystore_deadline) != key:
                    raise errors.KeystoreUnavailable("the OS keystore did not return the key just stored in it")
                backend = await asyncio.to_thread(keystore.backend_name)
            else:
                assert passphrase is not None
                params, wrapped = await asyncio.to_thread(crypto.wrap_key, key, passphrase)
                meta["kdf"] = msgpack.packb([params.salt, params.n, params.r, params.p])
                meta["wrapped_key"] = wrapped
            await self.db(self.vault.set_meta_many, meta)
            self.meta.update(meta)
            rows = await self.db(self.vault.rows)
            if self._lock_epoch != epoch:
                log.info("initialised a vault (key source %s), left locked by a lock request", key_source)
                raise errors.Locked("the vault was created, but the agent was locked by request meanwhile; "
                                    "run `agent unlock`")
            self._set_unlocked(storage, rows)
        log.info("initialised a vault (key source %s)", key_source)
        return {"key_source": key_source, "backend": backend, "vault": str(self.options.vault)}

    # --- credentials ---------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def _writing(self) -> AsyncIterator[crypto.SecureStorage]:
        """Hold the write lock, with the storage that is current inside it.

        A keyring vault unlocks itself before the lock is taken: rotation takes
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
        self.last_use = time.monotonic()

    def get_cached(self, key: Key) -> str:
        """The hot path: a dict lookup while unlocked."""
        try:
            value = self.values[key]
        except KeyError:
            check_name(key[0])
            check_name(key[1], "credential type")
            if key in self.corrupt:
                raise errors.IntegrityError() from None
            raise errors.NotFound(f"no credential {key[0]}/{key[1]}") from None
        self.last_use = time.monotonic()
        return value

    async def get(self, key: Key) -> str:
        await self.storage()
        return self.get_cached(key)

    async def write(self, args: dict[str, Any], *, must_exist: bool) -> dict[str, Any]:
        key = (check_name(args["platform"]), check_name(args.get("credential_type", DEFAULT_TYPE), "credential type"))
        value: str = args["value"]
        if len(value) > protocol.MAX_VALUE:
            raise errors.BadRequest(f"the value is longer than {protocol.MAX_VALUE} characters")
        if args.get("metadata") is not None:
            check_metadata(args["metadata"])
        if args.get("expires_at") is not None:
            check_expires(args["expires_at"])
        if args.get("validate", True):
            check_credential(key[0], value, key[1])
        async with self._writing() as storage:
            old = self.index.get(key)
            if must_exist and old is None:
                raise errors.NotFound(f"no credential {key[0]}/{key[1]} to update")
            if "metadata" in args and args["metadata"] is not None:
                metadata = dict(args["metadata"])
            elif must_exist:
                kept = self.metadata_cache.get(key)  # update keeps the metadata
                if kept is None:  # its row fails its integrity check: never replace it with {} unasked
                    raise errors.IntegrityError(
                        f"the stored {key[0]}/{key[1]} fails its integrity check, so its metadata cannot be kept; "
                        "pass metadata to update it, or use store to replace it"
                    )
                metadata = kept
            else:
                metadata = {}
            expires = args["expires_at"] if "expires_at" in args else (old.expires if must_exist and old else None)
            now = time.time()
            row = Row(
                key[0],
                key[1],
                seal(storage, key[0], key[1], "value", value),
                seal(storage, key[0], key[1], "metadata", metadata),
                old.created if old else now,
                now,
                None if expires is None else float(expires),
            )
            await self.db(self.vault.put, row)
            self.index[key] = Info(row.created, row.updated, row.expires)
            if self._storage is storage:  # not locked meanwhile
                self.values[key] = value
                self.metadata_cache[key] = metadata
                self.corrupt.discard(key)
        self.touch()
        return {"created": old is None}

    async def delete(self, key: Key) -> None:
        check_name(key[0])
        check_name(key[1], "credential type")
        async with self._writing():
            if not await self.db(self.vault.delete, *key):
                raise errors.NotFound(f"no credential {key[0]}/{key[1]}")
            self.index.pop(key, None)
            self.values.pop(key, None)
            self.metadata_cache.pop(key, None)
            self.corrupt.discard(key)
        self.touch()

    def describe(self, key: Key) -> dict[str, Any]:
        info = self.index[key]
        entry: dict[str, Any] = {
            "platform": key[0],
            "credential_type": key[1],
            "created": info.created,
            "updated": info.updated,
            "expires_at": info.expires,
        }
        if not self.locked:
            entry["metadata"] = self.metadata_cache.get(key)
        return entry

    def list(self, offset: int = 0, limit: int | None = None) -> list[dict[str, Any]]:
        """Every credential's name and timestamps, plus metadata while unlocked; never values.

        ``offset``/``limit`` select one page of the listing in name order."""
        if offset < 0 or (limit is not None and limit < 0):
            raise errors.BadRequest("list offset and limit must not be negative")
        keys = sorted(self.index)
        if offset or limit is not None:
            keys = keys[offset:] if limit is None else keys[offset : offset + limit]
        return [self.describe(k) for k in keys]

    async def metadata(self, key: Key) -> dict[str, Any]:
        check_name(key[0])
        check_name(key[1], "credential type")
        await self.storage()
        if key not in self.index:
            raise errors.NotFound(f"no credential {key[0]}/{key[1]}")
        if key in self.corrupt:
            raise errors.IntegrityError()
        return self.describe(key)

    def status(self) -> dict[str, Any]:
        now = time.monotonic()
        idle_left = unlocked_left = None
        if not self.locked:
            if self.options.idle_timeout > 0:
                idle_left = max(0.0, self.last_use + self.options.idle_timeout - now)
            if self.options.max_unlocked > 0:
                unlocked_left = max(0.0, self.unlocked_at + self.options.max_unlocked - now)
        return {
            "pid": os.getpid(),
            "socket": str(self.options.socket),
            "socket_activated": self.options.socket_activated,
            "vault": str(self.options.vault),
            "initialized": self.initialized,
            "locked": self.locked,
            "locked_by_user": self.locked_by_user,
            "key_source": self.key_source,
            "credentials": len(self.index),
            "vault_read_only": self.vault.read_only,  # why writes fail, or None
            "uptime_s": round(now - self.started, 3),
            "idle_timeout": self.options.idle_timeout,
            "max_unlocked": self.options.max_unlocked,
            "idle_left_s": idle_left,
            "unlocked_left_s": unlocked_left,
            "hardening": self.hardening,
            "loop": self.loop_name,
        }
