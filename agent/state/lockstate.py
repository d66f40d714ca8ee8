"""The lock state machine: every transition between locked and unlocked, and the lock order.

Rules of this module:
- it alone sets the unlocked storage, the key source, the held entries' plaintext
  and the explicit-lock epoch; the package's other modules change them through its
  public methods (``adopt``, ``switch_key``, ``set_source``, ``open_with``), never by
  assignment;
- the lock order is unlock lock, then write lock, and it is written once:
  ``writing()`` (a credential write) takes the write lock, ``exclusive()`` (init, a
  rotation, a switch of key source, a recovery) takes both; a keystore vault unlocks
  itself before either is taken, so that no caller unlocks while holding the write lock;
- plaintext (values and metadata) lives in memory only while unlocked; ``lock``
  drops the key and every cached plaintext at once (best effort in Python: the
  str objects are freed, not zeroed);
- the event loop never blocks: the store runs on one storage thread (which also
  serialises writes), scrypt and the keystore run in worker threads;
- the key source (``agent.keys``) and the store (``agent.stores``) are reached
  through their protocols: nothing here branches on which one it is.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import gc
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, Final, TypeVar

from agent import approvals, audit, crypto, hardening, keys
from agent.autolock import AutoLock
from agent.config import Options
from agent.crypto import unseal
from agent.remotes import NO_REMOTES, Hooks
from agent.state import resealing
from agent.state.commits import WriteQueue
from agent.state.entry import Entries, Entry, open_entries
from agent.stores import HistoryLimits, Row, Store, VaultMeta
from client import errors

__all__ = ["LockState", "MAX_WAITING_UNLOCKS"]

log = logging.getLogger("agent.state")

T = TypeVar("T")
# Passphrase unlocks waiting their turn; more get `busy`, not minutes of queued delays.
MAX_WAITING_UNLOCKS: Final = 16


def _preload(source: keys.KeySource) -> None:
    try:
        source.preload()
    except Exception as e:  # noqa: BLE001 - the unlock that needs it reports it
        log.debug("loading the %s source's code failed (%s); the unlock will say why", source.name, type(e).__name__)
        return
    log.debug("loaded the code unlocking a %s vault needs (nothing asked of the keystore)", source.name)


class LockState:
    """The vault as the agent holds it: its rows' entries, its key source, and whether it is unlocked."""

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
        store.history_limits = HistoryLimits(options.history_keep, options.history_max_age)
        self._db = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="vault")
        self.audit = audit.AuditLog(self.store, self._db, options.audit_keep)
        # reads a rule keeps for the user's approval, and the approvals given (agent.access)
        self.approvals = approvals.Approvals(options.confirm_timeout)
        # a locked agent holds no entry per row until a listing asks (``hold_names``): a
        # start, and a lock, cost the same whatever the vault holds
        self.entries = Entries()
        self.names_held = False
        self.meta = VaultMeta(self.store, self.db)
        self._source: keys.KeySource | None = None  # made on first need, from the vault's meta
        self._early_unlock: asyncio.Future[None] | None = None  # see ``warm``
        self._storage: crypto.SecureStorage | None = None
        self.locked_by_user = False
        # not explicit: a keystore vault unlocks itself again on the next use
        self.autolock = AutoLock(
            options.idle_timeout, options.max_unlocked, lambda: self.lock(explicit=False, reason="auto-lock timer")
        )
        self._write_lock: asyncio.Lock | None = None
        # stores and updates waiting for the next group commit (agent.state.credentials plans them)
        self.write_queue: WriteQueue[Any, dict[str, Any]] = WriteQueue()
        self._unlock_lock: asyncio.Lock | None = None
        self._lock_epoch = 0  # counts explicit locks: an unlock in flight yields to a later lock
        self.unlocks_waiting = 0
        # wrong recovery codes in a row: each costs a growing delay, one attempt at a time
        self.recover_failures = 0
        self.recovers_waiting = 0
        self.recover_turn = asyncio.Lock()
        self.on_stop: Callable[[], None] = lambda: None
        self.remotes: Hooks = NO_REMOTES  # team vaults (agent.remotes.team); local names shadow theirs

    def __repr__(self) -> str:
        held = len(self.entries) if self.names_held else "not read"
        return f"Agent(vault={str(self.options.vault)!r}, locked={self.locked}, credentials={held})"

    # --- what the state is -------------------------------------------------------------
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

    @property
    def epoch(self) -> int:
        """Explicit locks so far: an operation that read it before a lock yields to that lock."""
        return self._lock_epoch

    def holds(self, storage: crypto.SecureStorage) -> bool:
        """Whether ``storage`` is still the unlocked one (no lock or rotation since it was taken)."""
        return self._storage is storage

    def source(self) -> keys.KeySource:
        """The vault's key source; ``NotInitialized`` before ``init``."""
        if self._source is None:
            name = self.key_source
            if name is None:
                raise errors.NotInitialized()
            self._source = keys.source_for(name, self.meta, self.options.keystore_deadline)
        return self._source

    def set_source(self, source: keys.KeySource) -> None:
        """The key source the vault's meta now names (after ``init`` or a switch of source)."""
        self._source = source

    def check_key(self, storage: crypto.SecureStorage) -> None:
        """``IntegrityError`` unless ``storage``'s key is this vault's (its key check opens)."""
        token = self.meta.get("key_check")
        if token is None or unseal(storage, "", "", "key-check", token) != self.meta.vault_id():
            raise errors.IntegrityError()

    async def db(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a store call on the storage thread."""
        return await asyncio.get_running_loop().run_in_executor(self._db, fn, *args)

    async def hold_names(self) -> Entries:
        """The entries, every row's name and times at least: while locked, read from the
        vault on first need (tokens left unread) and held until the next lock or unlock."""
        if not self.names_held:
            stamps = await self.db(self.store.stamps)
            if not self.names_held:  # no unlock meanwhile
                self.entries = Entries((((p, t), Entry(c, u, e)) for p, t, c, u, e in stamps), self.entries.sorts)
                self.names_held = True
        return self.entries

    async def count(self) -> int:
        """How many credentials the vault holds (counted by the vault while no names are held)."""
        return len(self.entries) if self.names_held else await self.db(self.store.count)

    def touch(self) -> None:
        """A use of the credentials: the idle timer starts again."""
        self.autolock.last_use = time.monotonic()

    def check_vault(self) -> None:
        """The vault file is still the one at its path; else the agent locks (once) and stays
        locked: what it holds came from a file the user deleted or replaced."""
        if self.store.replaced is None:
            try:
                self.store.check_in_place()
            except errors.StorageError as e:
                log.warning("%s", e.message)
        if self.store.replaced is not None and not (self.locked and self.locked_by_user):
            self.lock(explicit=True, reason=f"the vault file was {self.store.replaced}")

    def close(self) -> None:
        self.lock(explicit=False, reason="shutdown")
        self.audit.flush()  # queued before the shutdown below, so written before exit
        self._db.shutdown(wait=True)
        self.store.close()

    # --- the lock order ------------------------------------------------------------------
    def _locks(self) -> tuple[asyncio.Lock, asyncio.Lock]:
        if self._write_lock is None or self._unlock_lock is None:
            self._write_lock, self._unlock_lock = asyncio.Lock(), asyncio.Lock()
        return self._write_lock, self._unlock_lock

    @contextlib.asynccontextmanager
    async def writing(self) -> AsyncIterator[crypto.SecureStorage]:
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

    @contextlib.asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        """Hold both locks, in their order: no unlock and no write runs meanwhile."""
        write_lock, unlock_lock = self._locks()
        async with unlock_lock, write_lock:
            yield

    # --- transitions -----------------------------------------------------------------------
    def lock(self, *, explicit: bool = True, reason: str = "request") -> None:
        self._storage = None
        if self._source is not None:
            self._source.forget()
        self.entries = Entries(sorts=self.entries.sorts)
        self.names_held = False
        self.remotes.forget()
        if explicit:
            self.locked_by_user = True
            self._lock_epoch += 1
        self.autolock.stop()
        # garbage in reference cycles keeps whole pymalloc arenas mapped until the collector's
        # next turn: at 100,000 credentials, 77.5 MiB after lock without this, 53.9 MiB with it
        gc.collect()
        hardening.release_memory()
        log.info("locked (%s)", reason)

    def adopt(self, storage: crypto.SecureStorage, rows: list[Row]) -> None:
        """Unlocked with ``storage``: the rows' plaintext is held, the timers and the remotes start."""
        self.entries = open_entries(storage, rows, self.entries.sorts)
        self.names_held = True
        self._storage = storage
        self.locked_by_user = False
        self.remotes.unlocked(storage)
        self.autolock.start()

    def switch_key(self, old: crypto.SecureStorage, new: crypto.SecureStorage) -> None:
        """A rotation committed: ``new`` replaces ``old``, unless a lock meanwhile dropped it
        (that lock holds: the next unlock opens with the new key)."""
        if self._storage is old:
            self._storage = new

    def check_epoch(self, epoch: int) -> None:
        if self._lock_epoch != epoch:
            log.info("an unlock yielded to a lock requested while it ran")
            raise errors.Locked("the agent was locked by request while it was unlocking; it stays locked")

    def _open_rows(self, key: bytes) -> tuple[crypto.SecureStorage, list[Row]]:
        """On the storage thread: check ``key`` opens this vault, read every row (names made canonical)."""
        storage = crypto.SecureStorage(key)
        try:
            self.check_key(storage)
        except errors.IntegrityError:
            raise errors.IntegrityError(
                "the master key does not open this vault (a different key in the keystore?)"
            ) from None
        return storage, resealing.migrate(self.store, storage, self.store.rows())

    async def open_with(self, key: bytes, epoch: int) -> None:
        """Unlock with ``key`` (checked), unless an explicit lock came after ``epoch``.
        The caller holds the unlock lock."""
        storage, rows = await self.db(self._open_rows, key)
        self.check_epoch(epoch)
        self.adopt(storage, rows)
        log.info("unlocked (%s)", self.key_source)

    async def unlock(self, passphrase: str | None = None) -> None:
        self.store.check_in_place()  # never unlock into a file that is no longer the vault
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
                        await self.open_with(await source.open(passphrase), epoch)
                    else:
                        self.locked_by_user = False
            finally:
                self.unlocks_waiting -= 1
        else:
            key = await source.open(passphrase)  # concurrent callers share one keystore fetch
            self.check_epoch(epoch)
            async with unlock_lock:
                if self.locked:
                    await self.open_with(key, epoch)
        await source.tidy()  # what an interrupted rotation left, if anything

    def warm(self) -> None:
        """Once the agent serves: a keystore vault unlocks itself on the first request that needs
        its key. Where the agent was started for such a request, its key is being read already
        (``claim_early``): it unlocks now. Else the code that unlock needs is loaded now, in a
        background thread (the source's ``preload``: imports, no keystore access), while the
        agent waits for that request."""
        try:
            source = self.source() if self.initialized and self.locked and not self.locked_by_user else None
        except errors.AgentError:
            return  # a vault this agent cannot use says so on the first request
        if source is None or source.needs_passphrase:
            return
        if source.claim_early():
            self._early_unlock = asyncio.ensure_future(self._unlock_early(source, self._lock_epoch))
        else:
            threading.Thread(target=_preload, args=(source,), name="preload", daemon=True).start()

    async def _unlock_early(self, source: keys.KeySource, epoch: int) -> None:
        try:
            await asyncio.to_thread(crypto.preload)  # while the helper still reads the key
            # nothing left to do after a lock (which let go of the helper) or once a request's
            # own unlock took the helper's answer: this unlock never asks the keystore itself
            if self.locked_by_user or self._lock_epoch != epoch or not self.locked or not source.claim_early():
                return
            await self.unlock()
        except errors.AgentError as e:  # the first request's own unlock tries again and says why
            log.info("could not unlock as the agent started: %s", e.message)
            return
        except Exception as e:  # noqa: BLE001 - as above, but unforeseen: said louder
            log.warning("could not unlock as the agent started (%s)", type(e).__name__)

    async def storage(self) -> crypto.SecureStorage:
        """The unlocked storage, unlocking a keystore vault on first need (gpg-agent style)."""
        if self._storage is not None:
            return self._storage
        if self.source().needs_passphrase or self.locked_by_user:
            raise errors.Locked()
        await self.unlock()
        assert self._storage is not None
        return self._storage
