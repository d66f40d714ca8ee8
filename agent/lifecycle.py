"""Running the agent: one per profile, its socket, signals, and a clean exit.

- One agent per profile: an exclusive, non-blocking flock on a lock file beside
  the socket. The loser says "already running" and exits 0.
- The socket is bound under umask 0o177 in a 0700 directory (no chmod after
  listen: that is a race). A stale socket is removed only while holding the lock,
  so it can never belong to a live agent.
- A socket passed by systemd (LISTEN_FDS/LISTEN_PID, fd 3) is adopted as is and
  never unlinked or rebound.
- SIGTERM/SIGINT: stop accepting, finish in-flight requests, remove the socket,
  exit 0. SIGUSR1: lock at once (panic wipe).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import resource
import signal
import socket
import stat
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from agent import hardening
from agent.core import Agent, Options
from agent.handlers import make_dispatch
from agent.server import Server
from client import paths

__all__ = ["serve", "AlreadyRunning", "systemd_socket", "SD_LISTEN_FDS_START"]

log = logging.getLogger("agent.lifecycle")

SD_LISTEN_FDS_START = 3


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
    sock = socket.socket(fileno=SD_LISTEN_FDS_START)
    if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_STREAM:
        raise SystemExit("the socket passed by systemd is not a Unix stream socket")
    os.set_inheritable(sock.fileno(), False)
    return sock


@contextlib.contextmanager
def single_instance(lock_file: Path) -> Iterator[IO[str]]:
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o600)
    f = os.fdopen(fd, "r+")
    try:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise AlreadyRunning() from None
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
        path.unlink()  # stale: we hold the lock, so no live agent owns it
        log.info("removed a stale socket at %s", path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        sock.bind(str(path))
    finally:
        os.umask(old)
    sock.listen(128)
    return sock


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


async def _run(options: Options, sock: socket.socket, report: dict[str, bool], loop_name: str) -> None:
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
    log.info("serving on %s (pid %d, %s loop, up to %d connections, idle deadline %g s)", options.socket,
             os.getpid(), loop_name, server.max_connections, server.idle_timeout)
    try:
        await stop.wait()
        log.info("stopping")
        await server.close()
    finally:
        agent.close()


def serve(options: Options) -> int:
    report = hardening.harden()
    hardening.raise_fd_limit()
    passed = systemd_socket()
    prepare_dir(options.socket)
    try:
        with single_instance(paths.lock_path()):
            sock = passed or bind_socket(options.socket)
            inode = options.socket.lstat().st_ino if passed is None else None
            loop_name, factory = _loop_factory()
            try:
                if factory is None:
                    asyncio.run(_run(options, sock, report, loop_name))
                else:
                    with asyncio.Runner(loop_factory=factory) as runner:
                        runner.run(_run(options, sock, report, loop_name))
            finally:
                sock.close()
                if inode is not None:
                    _remove_socket(options.socket, inode)
    except AlreadyRunning:
        print(f"an agent is already running for {options.socket}", file=sys.stderr)
        return 0
    log.info("stopped")
    return 0
