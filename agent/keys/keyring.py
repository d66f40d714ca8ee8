"""The OS keystore (through ``keyring``): holds one entry, the vault's master key.

Rules of this module:
- it is the agent's only module that imports ``keyring`` (lazily: paid only by
  vaults whose key lives there);
- every keyring call runs in its own daemon thread with a deadline: keyring,
  SecretStorage and jeepney have no timeouts and block forever on a hung daemon,
  so a hung call is abandoned (its thread leaks, the agent does not);
- keyring's exceptions become ``KeystoreUnavailable`` / ``KeystoreLocked`` with a
  message that says what to do; no key ever appears in one;
- what goes into the keystore is checked by ``check_entry`` before every write: the
  service ``credential-agent``, an account ``master-key-<vault id>[-<hex>]`` and a
  44-character Fernet key, all ASCII. So Windows Credential Manager (keyring's
  WinVault backend: target = service, blob = the value in UTF-16, at most 2560 bytes)
  and the macOS Keychain never see a value or name that could trip them (the seed's
  "stub received bad data", RPC_X_BAD_STUB_DATA, came from whole credentials stored
  as blobs); credentials themselves never go to the keystore.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import sys
import threading
from collections.abc import Callable
from typing import Any, Final, TypeVar

from agent import faults
from agent.keys.base import Meta
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

SERVICE: Final = "credential-agent"
# A healthy Secret Service answers at once; an unlock prompt may take a person
# a while, but a daemon that is stopped never answers.
DEFAULT_DEADLINE: Final[float] = config.KEYS["keystore_timeout"].default
# Abandoned (hung) calls each keep a thread; past this many, fail fast instead.
_MAX_HUNG = 8
_hung = 0
_hung_lock = threading.Lock()

T = TypeVar("T")

# wincred.h: the largest CredentialBlob Credential Manager stores (5 * 512 bytes);
# keyring's WinVault backend writes the value as UTF-16, two bytes a character.
CRED_MAX_CREDENTIAL_BLOB_SIZE: Final = 2560
_ACCOUNT_RE: Final = re.compile(r"(?:master-key|probe)-[0-9a-f]{1,64}(?:-[0-9a-f]{1,16})?")
_VALUE_RE: Final = re.compile(r"[A-Za-z0-9_=-]{1,128}")  # a Fernet key (urlsafe base64), or a probe token


def check_entry(service: str, account: str, value: str) -> None:
    """Refuse an entry outside the one shape the agent writes (see the module rules)."""
    if service != SERVICE or not _ACCOUNT_RE.fullmatch(account):
        raise errors.Internal(f"refusing to write the keystore entry {service!r}/{account!r}: not a name of ours")
    if not _VALUE_RE.fullmatch(value) or len(value.encode("utf-16-le")) > CRED_MAX_CREDENTIAL_BLOB_SIZE:
        raise errors.Internal("refusing to write a keystore value that is not a key of ASCII letters and digits")


_FIX = (
    "start a Secret Service (gnome-keyring, KeePassXC) in this session, or use "
    "`agent init --key-source passphrase` on headless machines"
)
# Linux: an agent started outside the desktop session (ssh, cron, a tmux server started
# before login) has no session bus, so it reaches no Secret Service however many run
_NO_BUS = (
    "this agent has no session D-Bus, so it reaches no Secret Service: where a desktop session runs one, the "
    "agent was started outside it (ssh, cron, an old tmux server): restart it from that session (`agent stop`, "
    "then `agent start` in one of its terminals) or have the session start it (`agent service install`); on a "
    "headless machine use `agent init --key-source passphrase`"
)


def _fix() -> str:
    """What to do when the keystore cannot be reached: the missing session bus, if that is why."""
    if sys.platform.startswith("linux") and not os.environ.get("DBUS_SESSION_BUS_ADDRESS"):
        runtime = os.environ.get("XDG_RUNTIME_DIR")
        if not runtime or not os.path.exists(os.path.join(runtime, "bus")):
            return _NO_BUS
    return _FIX


def _translate(e: BaseException) -> errors.AgentError:
    from keyring import errors as kerr

    name = type(e).__name__
    if isinstance(e, kerr.KeyringLocked):
        return errors.KeystoreLocked()
    if isinstance(e, kerr.NoKeyringError):
        return errors.KeystoreUnavailable(f"no OS keystore backend is available; {_fix()}")
    if isinstance(e, (kerr.KeyringError, RuntimeError, OSError, ValueError)):
        return errors.KeystoreUnavailable(f"the OS keystore failed ({name}); {_fix()}")
    return errors.KeystoreUnavailable(f"the OS keystore failed unexpectedly ({name})")


# keyring's modules are imported by ``preload`` (a thread, once the agent serves) or by the
# first keystore call's thread, never by both at once: Python's module locks, taken in two
# orders, may hand one of them a module still half made (an AttributeError). Once a call has
# imported them (``_imported``), the preload has nothing left to do and does nothing.
_imports = threading.Lock()
_imported = False

_OWN_BACKEND = "client."  # credential-agent's own keyring backend lives in the client package
_real_backend: Any = None


def _best_real_backend() -> Any:
    """The backend keyring would pick if this agent's own one were not configured.

    A user who points PYTHON_KEYRING_BACKEND at the agent's own backend (for twine or pip)
    also hands it to the agent they start; asking itself for its own
    master key would deadlock until the deadline, so the agent looks past it.
    """
    global _real_backend
    if _real_backend is None:
        from keyring.backend import get_all_keyring
        from keyring.backends.chainer import ChainerBackend

        candidates = [
            kr
            for kr in get_all_keyring()
            if not type(kr).__module__.startswith(_OWN_BACKEND)
            and not isinstance(kr, ChainerBackend)  # it may chain this agent's backend
            and kr.priority > 0
        ]
        if not candidates:
            raise errors.KeystoreUnavailable(f"no OS keystore backend is available; {_fix()}")
        _real_backend = max(candidates, key=lambda kr: kr.priority)
    return _real_backend


_chosen: Any = None
_KEYRING_BACKENDS: Final = "keyring.backends."  # keyring's own backends, the only ones loaded by a name in the vault
# the vault's meta key naming the backend its key was stored with (``module.Class``)
KNOWN_BACKEND: Final = "key_backend"


def _choose(known: str | None = None) -> Any:
    """keyring's own choice (PYTHON_KEYRING_BACKEND, else keyringrc.cfg's default-keyring,
    else the installed backend of highest priority), but without the config file's
    ``keyring-path``: a directory keyring would put on sys.path, so that whoever sets
    XDG_CONFIG_HOME for the shell that starts the agent (a project's .envrc) could run
    code in it. Backends load from installed packages only.

    ``known``: the backend that holds this vault's key (``KNOWN_BACKEND`` in its meta). Where
    neither the variable nor the file names one, keyring would find every installed backend
    through their entry points and ask each its priority (~80 ms, most of a first unlock);
    the known one is loaded alone when keyring says it is usable (``load_keyring`` asks its
    priority), else the search runs as before."""
    global _chosen, _imported
    if _chosen is None:
        import configparser

        with _imports:  # not around the choice below: a hung keystore may hold it forever
            import keyring.backend
            import keyring.core
            import keyring.util.platform_

            _imported = True

        name = os.environ.get("PYTHON_KEYRING_BACKEND", "").strip()
        if not name:
            rc = configparser.RawConfigParser()
            rc.read(os.path.join(keyring.util.platform_.config_root(), "keyringrc.cfg"), encoding="utf-8")
            name = rc.get("backend", "default-keyring", fallback="").strip()
        if name:
            _chosen = keyring.core.load_keyring(name)
        else:
            _chosen = _load_known(known) or max(keyring.backend.get_all_keyring(), key=keyring.backend.by_priority)
    return _chosen


def _load_known(name: str | None) -> Any:
    """keyring's backend ``name`` (one of keyring's own) if it is usable here, else None."""
    if not name or not name.startswith(_KEYRING_BACKENDS):
        return None
    import keyring.core

    try:
        return keyring.core.load_keyring(name)
    except Exception:  # noqa: BLE001 - not usable here (gone, no session bus): keyring's search decides
        return None


def _backend(known: str | None = None) -> Any:
    kr = _choose(known)
    import keyring.backends.fail  # loaded by then (keyring.core imports it)

    if type(kr).__module__.startswith(_OWN_BACKEND):
        kr = _best_real_backend()
    module = type(kr).__module__
    if isinstance(kr, keyring.backends.fail.Keyring) or module.startswith("keyring.backends.null"):
        raise errors.KeystoreUnavailable(f"no OS keystore backend is available; {_fix()}")
    if module.startswith("keyrings.alt"):
        # keyrings.alt stores secrets in plain or weakly protected files: refusing is
        # the only way to keep "the master key never touches disk in the clear"
        raise errors.KeystoreUnavailable(
            f"the keyring backend {module} keeps secrets in files, not an OS keystore; {_FIX}"
        )
    return kr


def backend_name() -> str:
    kr = _backend()
    return f"{type(kr).__module__}.{type(kr).__name__}"


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
            result, ok = _translate(e), False
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
    """The entry ``account``; ``known``: the backend that should hold it (see ``_choose``)."""

    def call() -> bytes | None:
        value = _backend(known).get_password(SERVICE, account)
        return None if value is None else value.encode("ascii")

    return await _in_thread(call, deadline)


async def set_key(account: str, key: bytes, deadline: float = DEFAULT_DEADLINE) -> None:
    value = key.decode("ascii")
    check_entry(SERVICE, account, value)
    await _in_thread(lambda: _backend().set_password(SERVICE, account, value), deadline)


async def delete_key(account: str, deadline: float = DEFAULT_DEADLINE) -> None:
    def call() -> None:
        from keyring import errors as kerr

        try:
            _backend().delete_password(SERVICE, account)
        except kerr.PasswordDeleteError:
            pass

    await _in_thread(call, deadline)


async def probe(deadline: float = DEFAULT_DEADLINE) -> str:
    """A real round trip (set, get, delete a throwaway entry); returns the backend name.

    ``keyring.get_keyring()`` naming a backend proves nothing until this succeeds.
    """

    def call() -> str:
        import secrets

        kr = _backend()
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

    def __repr__(self) -> str:
        return f"KeyringSource(deadline={self.deadline:g})"

    def account(self) -> str:
        # key rotation stores each new key under a new account, named in the vault
        account = self.meta.get("key_account")
        return account.decode() if account else f"master-key-{self.meta.vault_id()}"

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
            fetch = self._fetch = asyncio.ensure_future(get_key(self.account(), self.deadline, self._known()))
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

    def _known(self) -> str | None:
        known = self.meta.get(KNOWN_BACKEND)
        return known.decode(errors="replace") if known else None

    def _forget_fetch(self, fetch: asyncio.Future[bytes | None]) -> None:
        if self._fetch is fetch:
            self._fetch = None

    def forget(self) -> None:
        self._fetch = None  # a finished fetch holds the key bytes as its result

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
        """Import keyring (~60 ms: its own imports bring urllib.request, email, importlib_metadata)
        and the backend PYTHON_KEYRING_BACKEND names (else the one the vault names); the first
        request that needs the key then waits only for the keystore. Imports only: no backend is
        chosen, no keystore is asked."""
        import importlib

        with _imports:
            if _imported:
                return
            import keyring.backend
            import keyring.core  # noqa: F401

            name = os.environ.get("PYTHON_KEYRING_BACKEND", "").strip() or self._known() or ""
            module = name.rpartition(".")[0]
            if module.startswith(_KEYRING_BACKENDS):  # keyring's own; any other is loaded when chosen
                with contextlib.suppress(ImportError):
                    importlib.import_module(module)

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
