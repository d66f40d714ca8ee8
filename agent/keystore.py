"""The OS keystore (through ``keyring``): holds one entry, the vault's master key.

Rules of this module:
- it is the only module that imports ``keyring`` (lazily: ~70 ms, paid only by
  vaults whose key lives there);
- every keyring call runs in its own daemon thread with a deadline: keyring,
  SecretStorage and jeepney have no timeouts and block forever on a hung daemon,
  so a hung call is abandoned (its thread leaks, the agent does not);
- keyring's exceptions become ``KeystoreUnavailable`` / ``KeystoreLocked`` with a
  message that says what to do; no key ever appears in one.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any, Final, TypeVar

from client import errors

__all__ = ["SERVICE", "DEFAULT_DEADLINE", "get_key", "set_key", "delete_key", "probe", "backend_name"]

SERVICE: Final = "credential-agent"
# A healthy Secret Service answers in ~10 ms; an unlock prompt may take a person
# a while, but a daemon that is stopped never answers.
DEFAULT_DEADLINE: Final = 10.0
# Abandoned (hung) calls each keep a thread; past this many, fail fast instead.
_MAX_HUNG = 8
_hung = 0
_hung_lock = threading.Lock()

T = TypeVar("T")

_FIX = (
    "start a Secret Service (gnome-keyring, KeePassXC) in this session, or use "
    "`agent init --key-source passphrase` on headless machines"
)


def _translate(e: BaseException) -> errors.AgentError:
    from keyring import errors as kerr

    name = type(e).__name__
    if isinstance(e, kerr.KeyringLocked):
        return errors.KeystoreLocked()
    if isinstance(e, kerr.NoKeyringError):
        return errors.KeystoreUnavailable(f"no OS keystore backend is available; {_FIX}")
    if isinstance(e, (kerr.KeyringError, RuntimeError, OSError, ValueError)):
        return errors.KeystoreUnavailable(f"the OS keystore failed ({name}); {_FIX}")
    return errors.KeystoreUnavailable(f"the OS keystore failed unexpectedly ({name})")


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
            kr for kr in get_all_keyring()
            if not type(kr).__module__.startswith(_OWN_BACKEND)
            and not isinstance(kr, ChainerBackend)  # it may chain this agent's backend
            and kr.priority > 0
        ]
        if not candidates:
            raise errors.KeystoreUnavailable(f"no OS keystore backend is available; {_FIX}")
        _real_backend = max(candidates, key=lambda kr: kr.priority)
    return _real_backend


def _backend() -> Any:
    import keyring
    import keyring.backends.fail

    kr = keyring.get_keyring()
    if type(kr).__module__.startswith(_OWN_BACKEND):
        kr = _best_real_backend()
    module = type(kr).__module__
    if isinstance(kr, keyring.backends.fail.Keyring) or module.startswith("keyring.backends.null"):
        raise errors.KeystoreUnavailable(f"no OS keystore backend is available; {_FIX}")
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


async def get_key(account: str, deadline: float = DEFAULT_DEADLINE) -> bytes | None:
    def call() -> bytes | None:
        value = _backend().get_password(SERVICE, account)
        return None if value is None else value.encode("ascii")

    return await _in_thread(call, deadline)


async def set_key(account: str, key: bytes, deadline: float = DEFAULT_DEADLINE) -> None:
    await _in_thread(lambda: _backend().set_password(SERVICE, account, key.decode("ascii")), deadline)


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
        kr.set_password(SERVICE, account, token)
        try:
            if kr.get_password(SERVICE, account) != token:
                raise errors.KeystoreUnavailable("the OS keystore did not return what was stored in it")
        finally:
            kr.delete_password(SERVICE, account)
        return f"{type(kr).__module__}.{type(kr).__name__}"

    return await _in_thread(call, deadline)
