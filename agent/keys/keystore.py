"""The OS keystore through ``keyring``, called synchronously: one entry holds the vault's master key.

Rules of this module:
- it is the agent's only module that imports ``keyring`` (lazily: paid only by
  vaults whose key lives there), and it imports no ``asyncio``: its calls run in a
  thread with a deadline (``agent.keys.keyring``) or in the helper process that reads
  a key while a new agent loads (``agent.keys.early``), which must not pay for asyncio;
- keyring's exceptions become ``KeystoreUnavailable`` / ``KeystoreLocked`` (``translate``)
  with a message that says what to do; no key ever appears in one;
- what goes into the keystore is checked by ``check_entry`` before every write: the
  service ``credential-agent``, an account ``master-key-<vault id>[-<hex>]`` and a
  44-character Fernet key, all ASCII. So Windows Credential Manager (keyring's
  WinVault backend: target = service, blob = the value in UTF-16, at most 2560 bytes)
  and the macOS Keychain never see a value or name that could trip them (the seed's
  "stub received bad data", RPC_X_BAD_STUB_DATA, came from whole credentials stored
  as blobs); credentials themselves never go to the keystore.
"""

from __future__ import annotations

import os
import re
import sys
import threading
from collections.abc import Callable
from typing import Any, Final

from client import errors

__all__ = [
    "SERVICE",
    "KNOWN_BACKEND",
    "CRED_MAX_CREDENTIAL_BLOB_SIZE",
    "check_entry",
    "translate",
    "backend",
    "backend_name",
    "account",
    "read",
    "write",
    "delete",
    "preload",
]

SERVICE: Final = "credential-agent"

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


def translate(e: BaseException) -> errors.AgentError:
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
# first keystore call, never by both at once: Python's module locks, taken in two
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


def backend(known: str | None = None) -> Any:
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
    kr = backend()
    return f"{type(kr).__module__}.{type(kr).__name__}"


def account(meta: Callable[[str], bytes | None]) -> str:
    """The entry holding a vault's key, from its meta (``meta(name)``): key rotation stores
    each new key under a new account, named in the vault (``key_account``)."""
    named = meta("key_account")
    return named.decode() if named else f"master-key-{(meta('vault_id') or b'').decode()}"


def read(entry: str, known: str | None = None) -> bytes | None:
    """The entry ``entry``; ``known``: the backend that should hold it (see ``_choose``)."""
    value = backend(known).get_password(SERVICE, entry)
    return None if value is None else value.encode("ascii")


def write(entry: str, key: bytes) -> None:
    """Store ``key`` as the entry ``entry`` (checked by ``check_entry`` first)."""
    value = key.decode("ascii")
    check_entry(SERVICE, entry, value)
    backend().set_password(SERVICE, entry, value)


def delete(entry: str) -> None:
    """Delete the entry ``entry``; one that is not there is not an error."""
    from keyring import errors as kerr

    try:
        backend().delete_password(SERVICE, entry)
    except kerr.PasswordDeleteError:
        pass


def preload(known: str | None) -> None:
    """Import keyring (~60 ms: its own imports bring urllib.request, email, importlib_metadata)
    and the backend PYTHON_KEYRING_BACKEND names (else ``known``). Imports only: no backend
    is chosen, no keystore is asked."""
    import contextlib
    import importlib

    with _imports:
        if _imported:
            return
        import keyring.backend
        import keyring.core  # noqa: F401

        name = os.environ.get("PYTHON_KEYRING_BACKEND", "").strip() or known or ""
        module = name.rpartition(".")[0]
        if module.startswith(_KEYRING_BACKENDS):  # keyring's own; any other is loaded when chosen
            with contextlib.suppress(ImportError):
                importlib.import_module(module)
