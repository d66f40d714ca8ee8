"""Where things live: one function per path (as rbw's dirs.rs).

Precedence is env > config file > default, written as one expression per path. Every path is
namespaced by ``CREDENTIAL_AGENT_PROFILE`` so profiles (and tests) never meet.
The profile and the config file's own place come from ``client._profile``; this module
reads the config file (``client.config``) only for the socket, and only when one exists.
platformdirs is imported only by the functions that need it: the socket path,
which every client computes, costs no import on Linux.

Per platform: Linux puts the socket in the runtime dir (``XDG_RUNTIME_DIR``), macOS
in the per-user temp dir (``$TMPDIR``), and Windows has no socket file: the agent
listens on the named pipe ``\\\\.\\pipe\\credential-agent-<user>[-<profile>]``, and
its directories live in the user's profile, which only the user (and SYSTEM and
Administrators) may open, so no POSIX mode is checked there.
"""

from __future__ import annotations

import os
import stat
import sys

from client import _profile, errors
from client._profile import APP, app_name, config_dir, config_path, profile

# The socket path, which every client computes, is built with os.path: pathlib,
# tempfile and typing would weigh on every client's import (see the import rows of
# benchmarks/run.py); the rest import pathlib when called.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Final

__all__ = [
    "APP",
    "MAX_SOCKET_PATH",
    "profile",
    "app_name",
    "runtime_dir",
    "socket_path",
    "socket_file",
    "lock_path",
    "data_dir",
    "vault_path",
    "config_dir",
    "config_path",
    "log_path",
    "ensure_private_dir",
    "InsecurePath",
    "check_socket",
    "darwin_runtime_dir",
]

# sun_path is 108 bytes on Linux and 104 on macOS; keep room for the NUL.
MAX_SOCKET_PATH: Final = 103


class InsecurePath(OSError):
    """A directory or socket that another user could control."""


def ensure_private_dir(path: Path) -> Path:
    """Create ``path`` as 0700, or check an existing one is ours and private; and check
    that no directory above it lets another user move it away or put another in its
    place (each is ours or root's, and writable by others only when sticky, as /tmp).
    On Windows only made: the user's profile directories carry the user's own ACL."""
    if sys.platform == "win32":
        path.mkdir(parents=True, exist_ok=True)
        return path
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = path.lstat()
    if not stat.S_ISDIR(st.st_mode):
        raise InsecurePath(f"{path} is not a directory")
    if st.st_uid != os.getuid():
        raise InsecurePath(f"{path} is owned by uid {st.st_uid}, not by this user")
    if st.st_mode & 0o077:
        os.chmod(path, 0o700)  # ours, so tighten it rather than fail
    real = os.path.realpath(path)
    while (parent := os.path.dirname(real)) != real:
        real = parent
        above = os.stat(real)
        if not _trusted_owner(above):
            raise InsecurePath(f"{path} lies in {real}, which belongs to uid {above.st_uid}")
        if _others_may_write(above):
            raise InsecurePath(
                f"{path} lies in {real}, which other users may write (mode {stat.S_IMODE(above.st_mode):04o})"
            )
    return path


def _trusted_owner(st: os.stat_result) -> bool:
    if sys.platform == "win32":
        return True  # st_uid is always 0 there: the ACL, not the owner, says who may write
    return st.st_uid in (os.getuid(), 0)


def _others_may_write(st: os.stat_result) -> bool:
    """Whether another user may put entries in (or take them out of) this directory:
    writable by group or others, and not sticky as /tmp is."""
    return bool(st.st_mode & 0o022) and not st.st_mode & stat.S_ISVTX


def _private_dir(path: str) -> bool:
    """A directory of this user's that nobody else may use (XDG's rule for a runtime dir)."""
    if sys.platform == "win32":
        return False  # no such rule to check there; nothing calls this on Windows
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and not st.st_mode & 0o077


def _base_runtime_dir() -> str:
    """The user's runtime dir; a directory of the home where there is none."""
    if sys.platform == "win32":
        import platformdirs

        return platformdirs.user_runtime_dir()  # the pipe needs none: the lock fallback only
    # su and sudo may keep the caller's XDG_RUNTIME_DIR: one that is not ours is not used
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and _private_dir(xdg):
        return xdg
    if sys.platform == "darwin":
        return darwin_runtime_dir(os.environ.get("TMPDIR", ""))
    run_user = f"/run/user/{os.getuid()}"
    if _private_dir(run_user):
        return run_user
    return _home_runtime_dir()


def darwin_runtime_dir(tmpdir: str) -> str:
    """macOS: ``$TMPDIR``, the per-user temp dir (``/var/folders/../T/``, 0700, made for
    each user by the system, short enough for sun_path), where it is a private
    directory of ours; else platformdirs' runtime dir (``~/Library/Caches/TemporaryItems``)."""
    tmpdir = tmpdir.rstrip("/")
    if (
        tmpdir
        and os.path.isabs(tmpdir)
        and _private_dir(tmpdir)
        and len(os.fsencode(os.path.join(tmpdir, app_name(), "agent.sock"))) <= MAX_SOCKET_PATH
    ):
        return tmpdir
    import platformdirs

    return platformdirs.user_runtime_dir()


def _home_runtime_dir() -> str:
    """No runtime dir (containers, cron, su): a directory in the home, which no other
    user can create or replace, as gpg-agent's ``~/.gnupg`` (a guessable name in the
    shared temp dir could be taken first); one per host, since homes may be shared.
    Only where that path is too long for a socket, a ``0700`` directory in the temp dir,
    refused when another user made it."""
    cache = os.environ.get("XDG_CACHE_HOME", "").strip()
    if not os.path.isabs(cache):  # relative: invalid, to be ignored (XDG base directory spec)
        cache = os.path.join(os.path.expanduser("~"), ".cache")
    if sys.platform == "win32":
        return _temp_dir()
    host = (os.uname().nodename.split(".")[0] if hasattr(os, "uname") else "") or "localhost"
    home_dir = os.path.join(cache, f"{APP}-run-{host[:32]}")
    sock = os.path.join(home_dir, app_name(), "agent.sock")
    if os.path.isabs(home_dir) and len(os.fsencode(sock)) <= MAX_SOCKET_PATH:
        return home_dir
    return os.path.join(_temp_dir(), f"{APP}-{os.getuid()}")


def _temp_dir() -> str:
    """tempfile.gettempdir()'s choice on POSIX, without importing tempfile (which
    brings in random, hashlib and shutil)."""
    if os.name != "posix":
        import tempfile

        return tempfile.gettempdir()
    for var in ("TMPDIR", "TEMP", "TMP"):
        d = os.environ.get(var)
        if d and os.path.isdir(d):
            return os.path.abspath(d)
    candidates = ("/tmp", "/var/tmp", "/usr/tmp")  # noqa: S108 - tempfile's own list; the dir made there is 0700
    return next((d for d in candidates if os.path.isdir(d)), os.getcwd())


def _runtime_dir() -> str:
    return os.path.join(_base_runtime_dir(), app_name())


def runtime_dir() -> Path:
    from pathlib import Path

    return Path(_runtime_dir())


def socket_file() -> str:
    """``socket_path()`` as a string, without importing pathlib (the client's way).

    env > config file > default; the config module loads only when a file exists.
    """
    return os.environ.get("CREDENTIAL_AGENT_SOCK") or _configured_socket() or _default_socket()


def _default_socket() -> str:
    if sys.platform == "win32":
        from client import win32

        app_name()  # the profile's rule, checked as everywhere
        return win32.pipe_name(win32.current_sid(), profile())
    return os.path.join(_runtime_dir(), "agent.sock")


def _configured_socket() -> str | None:
    if not _profile.config_may_exist():
        return None  # the common case: no file, no import
    from client import config

    value = config.file_value(config_path(), "socket")
    return None if value is None else str(value)


def socket_path() -> Path:
    from pathlib import Path

    return Path(socket_file())


def lock_path() -> Path:
    """The flock that makes one agent per vault: beside the vault, in its private
    directory (one vault, however its agents were started, and never beside a socket
    that ``CREDENTIAL_AGENT_SOCK`` may put in a shared directory)."""
    return data_dir() / "agent.lock"


def data_dir() -> Path:
    from pathlib import Path

    import platformdirs

    return Path(platformdirs.user_data_dir(app_name(), appauthor=False))


def vault_path() -> Path:
    return data_dir() / "vault.sqlite3"


def log_path() -> Path:
    from pathlib import Path

    import platformdirs

    return Path(platformdirs.user_log_dir(app_name(), appauthor=False)) / "agent.log"


def check_socket(path: str | os.PathLike[str]) -> None:
    """Refuse a socket another user could have planted or could use (impostor check).

    Raises ``FileNotFoundError`` when there is nothing at ``path``.
    """
    if sys.platform == "win32":
        raise errors.UntrustedSocket(f"{path}: no Unix sockets on Windows (the agent listens on a named pipe)")
    _check_socket_dir(os.fspath(path))
    st = os.stat(path)
    if not stat.S_ISSOCK(st.st_mode):
        raise errors.UntrustedSocket(f"{path} is not a socket")
    if st.st_uid != os.getuid():
        raise errors.UntrustedSocket(f"refusing {path}: owned by uid {st.st_uid}, not by this user")
    if st.st_mode & 0o077:
        raise errors.UntrustedSocket(f"refusing {path}: mode {stat.S_IMODE(st.st_mode):04o} lets other users connect")


def _check_socket_dir(path: str) -> None:
    """The socket's directory is no link, and nobody but this user (or root) may put a
    file of theirs in its place."""
    if sys.platform == "win32":
        return
    parent = os.path.dirname(os.path.abspath(path))
    st = os.lstat(parent)
    if stat.S_ISLNK(st.st_mode):
        raise errors.UntrustedSocket(f"refusing {path}: its directory {parent} is a symbolic link")
    if not _trusted_owner(st):
        raise errors.UntrustedSocket(f"refusing {path}: its directory {parent} is owned by uid {st.st_uid}")
    if _others_may_write(st):
        raise errors.UntrustedSocket(
            f"refusing {path}: other users may replace it (its directory {parent} has mode "
            f"{stat.S_IMODE(st.st_mode):04o})"
        )
