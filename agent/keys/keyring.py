"""The OS keystore as a key source: the vault's master key is one entry there.

Rules of this module:
- every keystore call (``agent.keys.keystore``, where keyring is imported) runs in its own
  daemon thread with a deadline: keyring, SecretStorage and jeepney have no timeouts and
  block forever on a hung daemon, so a hung call is abandoned (its thread leaks, the agent
  does not);
- a key read while the agent loaded (``agent.keys.early``) is taken by the first ``open``,
  with the same deadline; the keystore's refusal there is that ``open``'s answer (a prompt
  the user dismissed is not shown again), and where the helper failed before it reached the
  keystore, ``open`` reads the keystore itself, so what goes wrong is said as it always is;
- no key ever appears in a message, a log or a repr.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import Any, Final, TypeVar

from agent import faults
from agent.keys import early, keystore
from agent.keys.base import Meta
from agent.keys.keystore import CRED_MAX_CREDENTIAL_BLOB_SIZE, KNOWN_BACKEND, SERVICE, backend_name, check_entry
from client import config, errors

__all__ = [
    "KeyringSource",
    "SERVICE",
    "DEFAULT_DEADLINE",
    "get_key",
    "set_key",
    "delete_key",
    "probe",
    "backend_name",
    "check_entry",
    "CRED_MAX_CREDENTIAL_BLOB_SIZE",
]

log = logging.getLogger("agent.keys.keyring")

# A healthy Secret Service answers at once; an unlock prompt may take a person
# a while, but a daemon that is stopped never answers.
DEFAULT_DEADLINE: Final[float] = config.KEYS["keystore_timeout"].default
# Abandoned (hung) calls each keep a thread; past this many, fail fast instead.
_MAX_HUNG = 8
_hung = 0
_hung_lock = threading.Lock()

T = TypeVar("T")


async def _in_thread(fn: Callable[[], T], deadline: float) -> T:
    """Run ``fn`` in a fresh daemon thread; give up after ``deadline`` seconds."""
    global _hung
    with _hung_lock:
        if _hung >= _MAX_HUNG:
            raise errors.KeystoreUnavailable("the OS keystore is not answering (earlier calls still hang)")
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[T] = loop.create_future()

    def settle(ok: bool, value: Any) -> None:
        if fut.done():
            return
        if ok:
            fut.set_result(value)
        else:
            fut.set_exception(value)

    def run() -> None:
        global _hung
        try:
            result: Any = fn()
            ok = True
        except errors.AgentError as e:
            result, ok = e, False
        except BaseException as e:  # noqa: BLE001 - translated for the caller
            result, ok = keystore.translate(e), False
            result.__cause__ = None
        try:
            loop.call_soon_threadsafe(settle, ok, result)
        except RuntimeError:
            pass  # the loop is gone
        finally:
            if timed_out.is_set():
                with _hung_lock:
                    _hung -= 1

    timed_out = threading.Event()
    threading.Thread(target=run, name="keystore-call", daemon=True).start()
    try:
        return await asyncio.wait_for(asyncio.shield(fut), deadline)
    except TimeoutError:
        with _hung_lock:
            _hung += 1
        timed_out.set()
        raise errors.KeystoreUnavailable(
            f"the OS keystore did not answer within {deadline:g} s (is its daemon stopped or hung?)"
        ) from None


async def get_key(account: str, deadline: float = DEFAULT_DEADLINE, known: str | None = None) -> bytes | None:
    """The entry ``account``; ``known``: the backend that should hold it (``keystore.backend``)."""
    return await _in_thread(lambda: keystore.read(account, known), deadline)


async def set_key(account: str, key: bytes, deadline: float = DEFAULT_DEADLINE) -> None:
    await _in_thread(lambda: keystore.write(account, key), deadline)


async def delete_key(account: str, deadline: float = DEFAULT_DEADLINE) -> None:
    await _in_thread(lambda: keystore.delete(account), deadline)


async def probe(deadline: float = DEFAULT_DEADLINE) -> str:
    """A real round trip (set, get, delete a throwaway entry); returns the backend name.

    ``keyring.get_keyring()`` naming a backend proves nothing until this succeeds.
    """

    def call() -> str:
        import secrets

        kr = keystore.backend()
        account, token = f"probe-{secrets.token_hex(4)}", secrets.token_urlsafe(16)
        check_entry(SERVICE, account, token)
        kr.set_password(SERVICE, account, token)
        try:
            if kr.get_password(SERVICE, account) != token:
                raise errors.KeystoreUnavailable("the OS keystore did not return what was stored in it")
        finally:
            kr.delete_password(SERVICE, account)
        return f"{type(kr).__module__}.{type(kr).__name__}"

    return await _in_thread(call, deadline)


# meta keys a rotation leaves while it runs (see agent.state.masterkey): the new entry
# before it is committed, the old one after
_LEFTOVERS: Final = ("pending_key_account", "stale_key_account")


class KeyringSource:
    """The master key as one entry of the OS keystore, named in the vault's meta."""

    name = "keyring"
    needs_passphrase = False

    def __init__(self, meta: Meta, deadline: float = DEFAULT_DEADLINE) -> None:
        self.meta = meta
        self.deadline = deadline
        self._fetch: asyncio.Future[bytes | None] | None = None
        self._early: early.Helper | None = None  # the helper reading the key as the agent started

    def __repr__(self) -> str:
        return f"KeyringSource(deadline={self.deadline:g})"

    def account(self) -> str:
        return keystore.account(self.meta.get)

    async def create(self, key: bytes, vault_id: str, passphrase: str | None) -> tuple[dict[str, bytes], str | None]:
        account = f"master-key-{vault_id}"
        await self._store(account, key)
        backend = await asyncio.to_thread(backend_name)
        # named in the vault, so that an unlock loads this backend alone (see _choose)
        return {KNOWN_BACKEND: backend.encode()}, backend

    async def _store(self, account: str, key: bytes) -> None:
        await set_key(account, key, self.deadline)
        if await get_key(account, self.deadline) != key:
            raise errors.KeystoreUnavailable("the OS keystore did not return the key just stored in it")

    async def open(self, passphrase: str | None) -> bytes:
        """The master key; concurrent callers share one fetch, so each waits at most one
        deadline even when the keystore hangs (not one per caller)."""
        fetch = self._fetch
        if fetch is None:
            helper, self._early = self._early, None  # taken now: a lock from here on cannot kill it
            fetch = self._fetch = asyncio.ensure_future(self._read(helper))
            # once done, the future holds the key as its result: let go of it (the
            # waiters have theirs), so the key does not outlive the unlock in memory
            fetch.add_done_callback(self._forget_fetch)
        key = await asyncio.shield(fetch)
        if key is None:
            raise errors.KeystoreUnavailable(
                "the master key of this vault is missing from the OS keystore; "
                "restore it there, or the vault cannot be opened"
            )
        return key

    async def _read(self, helper: early.Helper | None) -> bytes | None:
        """The key from the helper that read it as the agent started, where it did; else
        from the keystore, now."""
        if helper is not None:
            try:
                read = await _in_thread(helper.wait, self.deadline)
            except errors.KeystoreUnavailable:
                helper.kill()  # the thread waiting for it then returns
                raise
            if isinstance(read, errors.AgentError):
                raise read  # the keystore's own answer (a prompt dismissed): not asked twice
            if read is not None and read[0] == self.account():
                log.info("the key was read as the agent started, for the request that started it")
                return read[1]
            log.debug("the key read as the agent started is not there; reading the keystore now")
        return await get_key(self.account(), self.deadline, self._known())

    def claim_early(self) -> bool:
        """Take the helper reading the key since the agent started (``agent.keys.early``)."""
        if self._early is None:
            self._early = early.claim()
        return self._early is not None

    def _known(self) -> str | None:
        known = self.meta.get(KNOWN_BACKEND)
        return known.decode(errors="replace") if known else None

    def _forget_fetch(self, fetch: asyncio.Future[bytes | None]) -> None:
        if self._fetch is fetch:
            self._fetch = None

    def forget(self) -> None:
        self._fetch = None  # a finished fetch holds the key bytes as its result
        helper, self._early = self._early, None
        if helper is not None:  # a lock before the key read as the agent started was used
            helper.discard()

    async def rewrap(self, new_key: bytes, passphrase: str | None) -> dict[str, bytes | None]:
        import secrets

        old_account = self.account()
        new_account = f"master-key-{self.meta.vault_id()}-{secrets.token_hex(4)}"
        # name the new entry in the vault before it exists, so a crash cannot orphan it
        await self.meta.save({"pending_key_account": new_account.encode()})
        try:
            await self._store(new_account, new_key)
        except errors.AgentError:
            await self.tidy()  # best effort now; the next unlock retries
            raise
        faults.point("rotate:after-keystore")
        backend = await asyncio.to_thread(backend_name)
        return {
            KNOWN_BACKEND: backend.encode(),  # a vault made before it was recorded has it from now on
            "key_account": new_account.encode(),
            "stale_key_account": old_account.encode(),
            "pending_key_account": None,
        }

    async def retire(self) -> None:
        await self.tidy()
        await delete_key(self.account(), self.deadline)
        await self.meta.drop("key_account")
        await self.meta.drop(KNOWN_BACKEND)

    def preload(self) -> None:
        """keyring and the backend that holds the key (``keystore.preload``): the first request
        that needs the key then waits only for the keystore."""
        keystore.preload(self._known())

    async def tidy(self) -> None:
        """Delete keystore entries a rotation left behind (an interrupted one, or the old key)."""
        for name in _LEFTOVERS:
            account = self.meta.get(name)
            if account is None:
                continue
            if account.decode() != self.account():  # never the live key, whatever the meta says
                try:
                    await delete_key(account.decode(), self.deadline)
                except errors.KeystoreUnavailable as e:
                    log.warning("could not delete an old keystore entry (%s); will retry at the next unlock", e.message)
                    continue
            await self.meta.drop(name)
