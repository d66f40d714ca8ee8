"""Reaching the agent, for both clients: how long to wait, and how to connect.

Rules of this module:
- one pair of functions per kind of transport: ``connect`` (blocking) and
  ``connect_async`` (asyncio). "unix:" today: a Unix socket at a filesystem path,
  refused by ``paths.check_socket`` before connecting if another user could have
  planted it or could use it, and after connecting, before a byte is sent, unless
  the kernel says the listening process runs as this user (a check of the file
  alone loses the race against a link swapped between the check and the
  connect). A Windows named pipe (an address that starts with ``PIPE_PREFIX``) is
  reached through ``client._pipe``, with the same errors and the same check of who
  serves it, by user SID;
- what happens once connected (framing, the lock, retries, autostart) is the
  clients' own;
- no asyncio at import: ``connect_async`` imports it when called, and only
  ``AsyncClient``, which has imported it already, calls it;
- nothing per request: timeouts are the kernel's (``SO_RCVTIMEO``/``SO_SNDTIMEO``
  on a blocking socket: ``settimeout`` would make it non-blocking and ``poll``
  before every send and receive), and a forked child learns of the fork from
  ``os.register_at_fork`` rather than a ``getpid`` per call.
"""

from __future__ import annotations

import _socket
import _struct
import _weakref
import os
import sys

from client import errors, paths, protocol

TYPE_CHECKING = False
if TYPE_CHECKING:
    import asyncio
    from collections.abc import Callable
    from typing import Protocol, TypeVar

    ProtocolT = TypeVar("ProtocolT", bound=asyncio.BaseProtocol)

    class Stream(Protocol):
        """What the blocking client needs of a connection: a socket, or ``_pipe.PipeStream``."""

        def settimeout(self, timeout: float | None, /) -> None: ...
        def sendall(self, data: bytes, /) -> None: ...
        def recv(self, size: int, /) -> bytes: ...
        def close(self) -> None: ...


__all__ = [
    "DEFAULT_TIMEOUT",
    "SLOW_TIMEOUT",
    "timeout_for",
    "set_timeout",
    "connect",
    "connect_async",
    "listener_uid",
    "reset_after_fork",
    "parse_xucred",
    "is_pipe",
]

# client.win32.PIPE_PREFIX, without importing ctypes into every client
_PIPE_PREFIX = "\\\\.\\pipe\\"

# Longer than the agent's keystore deadline (agent.keys.keyring.DEFAULT_DEADLINE, 10 s):
# a request that waits on a hung keystore gets the agent's keystore_unavailable
# error, which says what is wrong, rather than a bare timeout.
DEFAULT_TIMEOUT = 15.0
# For protocol.SLOW_OPS (init, unlock, rotate_key, ...): scrypt, the wrong-passphrase
# delay (up to 10 s) and a keystore round trip (up to 10 s) add up past the default.
SLOW_TIMEOUT = 60.0


def timeout_for(op: str, timeout: float) -> float:
    """How long to wait for the reply to ``op``, for a client whose timeout is ``timeout``."""
    return max(timeout, SLOW_TIMEOUT) if op in protocol.SLOW_OPS else timeout


def is_pipe(address: str) -> bool:
    """Whether ``address`` names a Windows named pipe rather than a Unix socket."""
    return address.startswith(_PIPE_PREFIX)


# struct xucred { u_int cr_version; uid_t cr_uid; short cr_ngroups; gid_t cr_groups[16]; }
# (<sys/ucred.h>, macOS and the BSDs): 4 + 4 + 2 (+ 2 padding) + 64 bytes.
XUCRED_SIZE = 76
XUCRED_VERSION = 0
SOL_LOCAL = 0  # macOS: the level of LOCAL_PEERCRED (<sys/un.h>)
LOCAL_PEERCRED = 0x001


def parse_xucred(raw: bytes) -> int:
    """The uid in a ``struct xucred`` that ``getsockopt(SOL_LOCAL, LOCAL_PEERCRED)`` filled."""
    if len(raw) < 8:
        raise OSError(0, f"LOCAL_PEERCRED returned {len(raw)} bytes, too short for a struct xucred")
    version = int.from_bytes(raw[0:4], sys.byteorder)
    if version != XUCRED_VERSION:
        raise OSError(0, f"LOCAL_PEERCRED returned a struct xucred of version {version}, not {XUCRED_VERSION}")
    return int.from_bytes(raw[4:8], sys.byteorder)


# struct timeval as two C longs: Linux and the BSDs; on macOS (a long and an int)
# the same 16 bytes hold the same little-endian value
_TIMEVAL = "@ll"
_MAX_SECONDS = 2**31 - 1


def set_timeout(sock: Stream, timeout: float) -> None:
    """Make each ``recv``/``send`` (and ``connect``) on the blocking ``sock`` fail
    with ``BlockingIOError`` once it has waited ``timeout`` seconds (a Windows pipe,
    ``client._pipe.PipeStream``, keeps its own timeout: its overlapped I/O waits that long)."""
    if not isinstance(sock, _socket.socket):
        sock.settimeout(timeout)
        return
    # 0 would mean "wait forever" to the kernel: the shortest wait it can express instead
    usec = max(1, round(min(timeout, _MAX_SECONDS) * 1_000_000))
    tv = _struct.pack(_TIMEVAL, usec // 1_000_000, usec % 1_000_000)
    sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_RCVTIMEO, tv)
    sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_SNDTIMEO, tv)


def listener_uid(sock: _socket.socket) -> int | None:
    """The uid of the process on the other end of a connected Unix socket, from the
    kernel (SO_PEERCRED: struct ucred; LOCAL_PEERCRED: struct xucred); None where the
    platform has no way to tell."""
    if sys.platform.startswith("linux"):
        raw = sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, 12)  # pid, uid, gid
        return int.from_bytes(raw[4:8], sys.byteorder)
    if sys.platform == "darwin" or "bsd" in sys.platform:
        return parse_xucred(sock.getsockopt(SOL_LOCAL, getattr(_socket, "LOCAL_PEERCRED", LOCAL_PEERCRED), XUCRED_SIZE))
    return None


def _no_unix_socket(path: str) -> FileNotFoundError:
    return FileNotFoundError(2, "on Windows the agent listens on a named pipe, not a Unix socket", path)


def _check_listener(sock: _socket.socket, path: str) -> None:
    if sys.platform == "win32":
        return  # never reached: no Unix sockets here
    uid = listener_uid(sock)
    if uid is not None and uid != os.getuid():
        raise errors.UntrustedSocket(
            f"refusing {path}: the process listening there runs as uid {uid}, not as this user; nothing was sent"
        )


def connect(path: str, timeout: float) -> Stream:
    """A connected Unix socket (or pipe) whose operations time out after ``timeout`` seconds.

    ``FileNotFoundError`` / ``ConnectionRefusedError`` when no agent listens there
    (the caller may start one), ``UntrustedSocket`` for another user's socket."""
    if is_pipe(path):
        return _connect_pipe(path, timeout)
    if sys.platform == "win32":
        raise _no_unix_socket(path)
    paths.check_socket(path)
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        set_timeout(sock, timeout)  # a full backlog makes connect wait: bounded by SO_SNDTIMEO
        sock.connect(path)
        _check_listener(sock, path)
    except BaseException:
        sock.close()
        raise
    return sock


# the clients whose connections a forked child must not use (weak: a client that
# is gone needs no reset)
_live: set[_weakref.ReferenceType[_ForkAware]] = set()

if TYPE_CHECKING:
    from typing import Protocol

    class _ForkAware(Protocol):
        def _after_fork(self) -> None: ...


def reset_after_fork(client: _ForkAware) -> None:
    """Call ``client._after_fork()`` in every child process forked while it lives."""
    _live.add(_weakref.ref(client, _live.discard))


def _in_child() -> None:
    for ref in list(_live):
        client = ref()
        if client is not None:
            client._after_fork()


if sys.platform != "win32":  # Windows has no fork (its children start afresh)
    os.register_at_fork(after_in_child=_in_child)


async def connect_async(path: str, factory: Callable[[], ProtocolT]) -> ProtocolT:
    """``connect`` for asyncio: the protocol ``factory`` made, connected (same errors)."""
    import asyncio

    if is_pipe(path):
        if sys.platform != "win32":
            raise FileNotFoundError(2, "named pipes exist on Windows only", path)
        from client import _pipe

        return await _pipe.connect_async(path, factory)
    if sys.platform == "win32":
        raise _no_unix_socket(path)
    paths.check_socket(path)
    transport, conn = await asyncio.get_running_loop().create_unix_connection(factory, path)
    try:
        _check_listener(transport.get_extra_info("socket"), path)
    except BaseException:
        transport.abort()
        raise
    return conn


def _connect_pipe(path: str, timeout: float) -> Stream:
    if sys.platform != "win32":
        raise FileNotFoundError(2, "named pipes exist on Windows only", path)
    from client import _pipe  # loads ctypes: only for a pipe address

    return _pipe.connect(path, timeout)
