"""The Unix socket endpoint: bind, peer credentials, systemd sockets, one agent per vault.

- One agent per vault: an exclusive, non-blocking flock on a lock file beside the
  vault (``paths.lock_path``), opened without following links. The loser says
  "already running".
- The socket is bound under umask 0o177 in a 0700 directory (no chmod after
  listen: that is a race). A stale socket is removed only while holding the lock,
  so it can never belong to a live agent.
- A socket passed by systemd (LISTEN_FDS/LISTEN_PID, fd 3) is adopted as is and
  never unlinked or rebound: systemd owns its file. A mismatched LISTEN_PID is
  refused rather than ignored, because binding our own socket at that path would
  steal it from whoever listens there.
- A socket file that still answers is never removed as "stale", even while we
  hold the lock: it may be a systemd socket unit waiting to start an agent.
- An agent that bound its own socket stops when the file is replaced or removed
  (a systemd socket unit took the path over): the socket-activated agent, which
  waits for the lock a while, then takes over without a restart loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import logging
import os
import select
import socket
import stat
import struct
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from agent.transport import NO_PEER, ListenError, Peer, callers
from client import paths, transport

# POSIX only (the Windows agent serves agent.transport.pipe); mypy skips the rest on win32
assert sys.platform != "win32", "Unix sockets: POSIX only"

__all__ = [
    "UnixListener",
    "AlreadyRunning",
    "systemd_socket",
    "single_instance",
    "bind_socket",
    "peer_of",
    "SD_LISTEN_FDS_START",
]

log = logging.getLogger("agent.transport.unix")

SD_LISTEN_FDS_START = 3
# How often an agent that bound its own socket checks that the file is still its own.
_WATCH_PERIOD = 1.0


class AlreadyRunning(Exception):
    """Another agent holds the lock: ``pid`` and ``socket`` as it wrote them there, if it did."""

    def __init__(self, pid: int | None = None, socket: str | None = None) -> None:
        super().__init__(pid, socket)
        self.pid, self.socket = pid, socket


def _holder(fd: int) -> AlreadyRunning:
    """What the agent holding the lock wrote in it: its pid, then its socket."""
    try:
        lines = os.pread(fd, 4096, 0).decode(errors="replace").splitlines()
        pid = int(lines[0]) if lines and lines[0].isdigit() else None
    except OSError:
        return AlreadyRunning()
    return AlreadyRunning(pid, lines[1] if len(lines) > 1 and lines[1] else None)


# --- peer credentials ------------------------------------------------------------------
def _exe_of(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:  # gone already, or /proc hidden from us
        return None


def peer_of(sock: Any) -> Peer:
    """The peer's credentials from the kernel (SO_PEERCRED / LOCAL_PEERCRED)."""
    if sys.platform.startswith("linux"):
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        pid, uid, gid = struct.unpack("3i", raw)
        if pid <= 0:
            return Peer(pid, uid, gid)
        exe = _exe_of(pid)
        started = callers.start_time(pid)
        return Peer(pid, uid, gid, exe, callers.caller_of(pid, exe), started=started, exe_id=callers.exe_id(pid))
    if sys.platform == "darwin" or "bsd" in sys.platform:
        level, option = transport.SOL_LOCAL, getattr(socket, "LOCAL_PEERCRED", transport.LOCAL_PEERCRED)
        uid = transport.parse_xucred(sock.getsockopt(level, option, transport.XUCRED_SIZE))
        pid = None
        local_peerpid = getattr(socket, "LOCAL_PEERPID", 0x002 if sys.platform == "darwin" else None)
        if local_peerpid is not None:
            try:
                pid = struct.unpack("i", sock.getsockopt(0, local_peerpid, 4))[0]
            except OSError:
                pid = None
        return Peer(pid, uid, None)
    return NO_PEER


# --- systemd socket activation -------------------------------------------------------------
def systemd_socket() -> socket.socket | None:
    """The listening socket systemd passed us, if any (sd_listen_fds semantics)."""
    fds, pid = os.environ.get("LISTEN_FDS"), os.environ.get("LISTEN_PID")
    if not fds:
        return None
    if pid != str(os.getpid()):
        # meant for another process (e.g. inherited through a wrapper): do not touch fd 3
        raise ListenError(f"LISTEN_PID={pid} is not this process ({os.getpid()}); refusing the passed socket")
    if fds != "1":
        raise ListenError(f"expected exactly one socket from systemd, got LISTEN_FDS={fds}")
    for var in ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"):
        os.environ.pop(var, None)  # not for our children
    try:
        sock = socket.socket(fileno=SD_LISTEN_FDS_START)
    except OSError as e:
        raise ListenError(f"LISTEN_FDS=1 but fd {SD_LISTEN_FDS_START} is not a socket ({e.strerror})") from None
    if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_STREAM:
        sock.detach()
        raise ListenError("the socket passed by systemd is not a Unix stream socket")
    if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
        sock.detach()
        raise ListenError("the socket passed by systemd is not listening (Accept=yes is not supported)")
    os.set_inheritable(sock.fileno(), False)
    return sock


def bound_path(sock: socket.socket) -> Path | None:
    name = sock.getsockname()
    if isinstance(name, bytes):
        name = os.fsdecode(name)
    return Path(name) if name and not name.startswith("\0") else None


# --- one agent per vault ---------------------------------------------------------------------
def _open_lock(lock_file: Path) -> tuple[int, bool]:
    """The lock file's descriptor and whether it is writable; never through a link (a
    planted one would have us create or truncate its target)."""
    flags = os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        return os.open(lock_file, os.O_RDWR | os.O_CREAT | flags, 0o600), True
    except OSError as e:
        if e.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
            raise
    return os.open(lock_file, os.O_RDONLY | flags), False  # a read-only directory: lock what is there


@contextlib.contextmanager
def single_instance(
    lock_file: Path, wait: float = 0.0, fallback: Path | None = None, socket: str = "", held: int | None = None
) -> Iterator[int]:
    """Hold the lock; ``wait`` > 0 retries that long before giving up. ``fallback`` is
    locked instead where ``lock_file`` can be neither created nor opened (a read-only
    vault directory that never held one). The holder writes its pid and ``socket`` in
    it, so that a second agent can say where the first one listens. ``held``: a
    descriptor of ``lock_file``, writable and locked already by this process
    (``agent.keys.early.hold``), which is used and closed instead."""
    if held is not None:
        try:
            os.ftruncate(held, 0)
            os.pwrite(held, f"{os.getpid()}\n{socket}\n".encode(), 0)
            yield held
        finally:
            os.close(held)
        return
    try:
        try:
            fd, writable = _open_lock(lock_file)
        except FileNotFoundError:
            if fallback is None:
                raise
            log.warning("cannot create %s (read-only?); locking %s instead", lock_file, fallback)
            paths.ensure_private_dir(fallback.parent)
            lock_file = fallback
            fd, writable = _open_lock(lock_file)
    except OSError as e:
        raise ListenError(
            f"cannot open the lock file {lock_file}: {e.strerror}"
            + (" (a symbolic link: refusing to follow it)" if e.errno == errno.ELOOP else "")
        ) from None
    try:
        st = os.fstat(fd)
        if st.st_uid != os.getuid() or not stat.S_ISREG(st.st_mode):
            raise ListenError(f"the lock file {lock_file} is not a regular file of this user; refusing it")
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise _holder(fd) from None
                time.sleep(0.05)
        if writable:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n{socket}\n".encode(), 0)
        yield fd
    finally:
        os.close(fd)


def prepare_dir(sock_path: Path) -> None:
    if "CREDENTIAL_AGENT_SOCK" in os.environ and sock_path.parent.exists():
        return  # the user's chosen directory: the socket's own mode protects it
    paths.ensure_private_dir(sock_path.parent)


# --- our own socket ----------------------------------------------------------------------------
def bind_socket(path: Path) -> socket.socket:
    """Bind and listen at ``path``; the caller holds the instance lock."""
    if len(os.fsencode(path)) > paths.MAX_SOCKET_PATH:
        raise ListenError(f"socket path too long for a Unix socket ({len(str(path))} bytes): {path}")
    with contextlib.suppress(FileNotFoundError):
        if not stat.S_ISSOCK(path.lstat().st_mode):
            raise ListenError(f"{path} exists and is not a socket; refusing to replace it")
        if _answers(path):
            # not an agent (we hold the lock): most likely a systemd socket unit
            raise ListenError(
                f"{path} is a live socket that another process listens on (a systemd socket unit? "
                "see `agent service status`); refusing to replace it"
            )
        path.unlink()  # stale: we hold the lock and nobody listens, so no live agent owns it
        log.info("removed a stale socket at %s", path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        sock.bind(str(path))
    finally:
        os.umask(old)
    sock.listen(128)
    return sock


def _answers(path: Path) -> bool:
    """Whether something accepts connections at ``path`` (a stale file refuses them)."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(str(path))
    except (ConnectionRefusedError, FileNotFoundError):
        return False
    except OSError as e:
        return e.errno in (errno.EAGAIN, errno.ETIMEDOUT)  # a full backlog is a live listener
    finally:
        probe.close()
    return True


def _inode(path: Path) -> int | None:
    try:
        return path.lstat().st_ino
    except FileNotFoundError:
        return None


class UnixListener:
    """A listening Unix stream socket: our own (bound here), or one systemd passed."""

    def __init__(self, sock: socket.socket, path: Path, *, activated: bool) -> None:
        self.sock = sock
        self.path = path
        self.address = str(path)
        self.activated = activated
        self.uid = os.getuid()
        # our own socket file, by inode: removed at close only while it is still ours
        self._inode = None if activated else _inode(path)

    @classmethod
    def bind(cls, path: Path) -> UnixListener:
        return cls(bind_socket(path), path, activated=False)

    def __repr__(self) -> str:
        return f"UnixListener({self.address!r}, activated={self.activated})"

    async def start(self, factory: Callable[[], asyncio.Protocol]) -> asyncio.AbstractServer:
        loop = asyncio.get_running_loop()
        return await loop.create_unix_server(factory, sock=self.sock, backlog=128)

    def peer(self, transport: asyncio.BaseTransport) -> Peer:
        try:
            return peer_of(transport.get_extra_info("socket"))
        except OSError:
            return NO_PEER

    def admits(self, peer: Peer) -> bool:
        return peer.uid is None or peer.uid == self.uid

    def hung_up(self, transport: asyncio.BaseTransport) -> bool:
        # a peer that closed its socket leaves ours hung up both ways (POLLHUP); one that
        # only shut down its sending side leaves it readable at EOF
        sock = transport.get_extra_info("socket")
        if sock is None or not hasattr(select, "poll"):
            return False
        poller = select.poll()
        poller.register(sock.fileno(), select.POLLOUT)
        return any(events & select.POLLHUP for _fd, events in poller.poll(0))

    async def taken_over(self) -> None:
        """Return once our socket file is gone or replaced: nobody can reach us any more."""
        if self._inode is None:  # systemd's file: it stays where it is
            await asyncio.Event().wait()
        while True:
            await asyncio.sleep(_WATCH_PERIOD)
            if _inode(self.path) != self._inode:
                log.warning("the socket %s was removed or taken over; stopping", self.path)
                return

    def close(self) -> None:
        self.sock.close()  # an adopted socket: our copy only; systemd keeps listening
        if self._inode is not None:
            with contextlib.suppress(FileNotFoundError):
                if self.path.lstat().st_ino == self._inode:  # ours, not a successor's
                    self.path.unlink()
