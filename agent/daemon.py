"""Running the agent: one per profile, its socket, signals, and a clean exit.

- One agent per profile: an exclusive, non-blocking flock on a lock file beside
  the socket. The loser says "already running" and exits 0.
- The socket is bound under umask 0o177 in a 0700 directory (no chmod after
  listen: that is a race). A stale socket is removed only while holding the lock,
  so it can never belong to a live agent.
- A socket passed by systemd (LISTEN_FDS/LISTEN_PID, fd 3) is adopted as is and
  never unlinked or rebound: systemd owns its file. A mismatched LISTEN_PID is
  refused (exit 1) rather than ignored, because binding our own socket at that
  path would steal it from whoever listens there.
- A socket file that still answers is never removed as "stale", even while we
  hold the lock: it may be a systemd socket unit waiting to start an agent.
- An agent that bound its own socket stops when the file is replaced or removed
  (a systemd socket unit took the path over): the socket-activated agent, which
  waits for the lock a while, then takes over without a restart loop.
- SIGTERM/SIGINT: stop accepting, finish in-flight requests, remove the socket,
  exit 0. SIGUSR1: lock at once (panic wipe).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import fcntl
import logging
import os
import resource
import signal
import socket
import stat
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from agent import hardening
from agent.core import Agent, Options
from agent.handlers import make_dispatch
from agent.server import Server
from client import paths

__all__ = ["serve", "AlreadyRunning", "systemd_socket", "SD_LISTEN_FDS_START"]

log = logging.getLogger("agent.daemon")

SD_LISTEN_FDS_START = 3
# How long a socket-activated agent waits for the lock held by a self-started agent
# that is stopping because its socket was taken over (it checks every
# _WATCH_PERIOD s and lets in-flight requests finish).
ADOPTED_LOCK_WAIT = 15.0
_WATCH_PERIOD = 1.0


class AlreadyRunning(Exception):
    pass


def systemd_socket() -> socket.socket | None:
    """The listening socket systemd passed us, if any (sd_listen_fds semantics)."""
    fds, pid = os.environ.get("LISTEN_FDS"), os.environ.get("LISTEN_PID")
    if not fds:
        return None
    if pid != str(os.getpid()):
        # meant for another process (e.g. inherited through a wrapper): do not touch fd 3
        raise SystemExit(f"LISTEN_PID={pid} is not this process ({os.getpid()}); refusing the passed socket")
    if fds != "1":
        raise SystemExit(f"expected exactly one socket from systemd, got LISTEN_FDS={fds}")
    for var in ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"):
        os.environ.pop(var, None)  # not for our children
    try:
        sock = socket.socket(fileno=SD_LISTEN_FDS_START)
    except OSError as e:
        raise SystemExit(f"LISTEN_FDS=1 but fd {SD_LISTEN_FDS_START} is not a socket ({e.strerror})") from None
    if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_STREAM:
        sock.detach()
        raise SystemExit("the socket passed by systemd is not a Unix stream socket")
    if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
        sock.detach()
        raise SystemExit("the socket passed by systemd is not listening (Accept=yes is not supported)")
    os.set_inheritable(sock.fileno(), False)
    return sock


def _bound_path(sock: socket.socket) -> Path | None:
    name = sock.getsockname()
    if isinstance(name, bytes):
        name = os.fsdecode(name)
    return Path(name) if name and not name.startswith("\0") else None


@contextlib.contextmanager
def single_instance(lock_file: Path, wait: float = 0.0) -> Iterator[IO[str]]:
    """Hold the profile's lock; ``wait`` > 0 retries that long before giving up."""
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o600)
    f = os.fdopen(fd, "r+")
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise AlreadyRunning() from None
                time.sleep(0.05)
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        yield f
    finally:
        f.close()


def prepare_dir(sock_path: Path) -> None:
    if "CREDENTIAL_AGENT_SOCK" in os.environ and sock_path.parent.exists():
        return  # the user's chosen directory: the socket's own mode protects it
    paths.ensure_private_dir(sock_path.parent)


def bind_socket(path: Path) -> socket.socket:
    """Bind and listen at ``path``; the caller holds the instance lock."""
    if len(os.fsencode(path)) > paths.MAX_SOCKET_PATH:
        raise SystemExit(f"socket path too long for a Unix socket ({len(str(path))} bytes): {path}")
    with contextlib.suppress(FileNotFoundError):
        if not stat.S_ISSOCK(path.lstat().st_mode):
            raise SystemExit(f"{path} exists and is not a socket; refusing to replace it")
        if _answers(path):
            # not an agent (we hold the lock): most likely a systemd socket unit
            raise SystemExit(
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


async def _watch_socket(path: Path, inode: int, stop: asyncio.Event) -> None:
    """Stop once our socket file is gone or replaced: nobody can reach us any more."""
    while not stop.is_set():
        await asyncio.sleep(_WATCH_PERIOD)
        if _inode(path) != inode:
            log.warning("the socket %s was removed or taken over; stopping", path)
            stop.set()


def _remove_socket(path: Path, inode: int) -> None:
    with contextlib.suppress(FileNotFoundError):
        if path.lstat().st_ino == inode:  # ours, not a successor's
            path.unlink()


# Descriptors kept back from the connection cap: the vault and its WAL/SHM, the log,
# the listening socket, the event loop's own, keystore D-Bus connections, threads.
_FD_RESERVE = 64


def connection_cap(configured: int) -> int:
    """The configured cap (0 = as many as descriptors allow), never above what the fd limit allows."""
    budget = max(1, resource.getrlimit(resource.RLIMIT_NOFILE)[0] - _FD_RESERVE)
    cap = min(configured, budget) if configured > 0 else budget
    if cap < configured:
        log.warning("connection cap lowered from %d to %d by the descriptor limit", configured, cap)
    return cap


def _loop_factory() -> tuple[str, type[asyncio.AbstractEventLoop] | None]:
    if os.environ.get("CREDENTIAL_AGENT_LOOP", "") != "asyncio":
        try:
            import uvloop

            return "uvloop", uvloop.Loop
        except ImportError:
            pass
    return "asyncio", None


async def _run(
    options: Options, sock: socket.socket, report: dict[str, bool], loop_name: str, inode: int | None
) -> None:
    loop = asyncio.get_running_loop()
    agent = Agent(options, hardening=report, loop_name=loop_name)
    server = Server(make_dispatch(agent), max_connections=connection_cap(options.max_connections),
                    idle_timeout=options.connection_idle_timeout)
    stop = asyncio.Event()

    def request_stop() -> None:
        loop.call_soon(stop.set)  # after the reply to `stop` is written

    agent.on_stop = request_stop
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, lambda: agent.lock(explicit=True, reason="SIGUSR1"))
    loop.add_signal_handler(signal.SIGHUP, lambda: None)  # survive the terminal closing
    await server.start(sock)
    how = "socket passed by systemd" if options.socket_activated else "own socket"
    log.info("serving on %s (%s, pid %d, %s loop, up to %d connections, idle deadline %g s)", options.socket,
             how, os.getpid(), loop_name, server.max_connections, server.idle_timeout)
    watcher = asyncio.create_task(_watch_socket(options.socket, inode, stop)) if inode is not None else None
    try:
        await stop.wait()
        log.info("stopping")
        await server.close()
    finally:
        if watcher is not None:
            watcher.cancel()
        agent.close()


def serve(options: Options) -> int:
    report = hardening.harden()
    hardening.raise_fd_limit()
    passed = systemd_socket()
    if passed is not None:
        where = _bound_path(passed) or options.socket
        if where != options.socket:
            log.warning("systemd passed a socket at %s, but clients look for %s", where, options.socket)
        options = dataclasses.replace(options, socket=where, socket_activated=True)
    prepare_dir(paths.lock_path())
    try:
        with single_instance(paths.lock_path(), wait=ADOPTED_LOCK_WAIT if passed else 0.0):
            sock = passed or bind_socket(options.socket)
            inode = None if passed is not None else options.socket.lstat().st_ino
            loop_name, factory = _loop_factory()
            try:
                if factory is None:
                    asyncio.run(_run(options, sock, report, loop_name, inode))
                else:
                    with asyncio.Runner(loop_factory=factory) as runner:
                        runner.run(_run(options, sock, report, loop_name, inode))
            finally:
                sock.close()  # an adopted socket: our copy only; systemd keeps listening
                if inode is not None:
                    _remove_socket(options.socket, inode)
    except AlreadyRunning:
        if passed is not None:
            # exit 0 would make systemd start us again and again for the waiting connection
            print(f"another agent holds {paths.lock_path()} and did not stop within {ADOPTED_LOCK_WAIT:g} s; "
                  "stop it (`agent stop`) so that the socket-activated agent can start", file=sys.stderr)
            return 1
        print(f"an agent is already running for {options.socket}", file=sys.stderr)
        return 0
    log.info("stopped")
    return 0
