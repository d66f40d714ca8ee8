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
  ``AsyncClient``, which has imported it already, calls it.
"""

from __future__ import annotations

import _socket
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

__all__ = ["DEFAULT_TIMEOUT", "SLOW_TIMEOUT", "timeout_for", "connect", "connect_async", "listener_uid",
           "parse_xucred", "is_pipe"]

# client._win32.PIPE_PREFIX, without importing ctypes into every client
_PIPE_PREFIX = "\\\\.\\pipe\\"

# Longer than the agent's keystore deadline (agent.keystore.DEFAULT_DEADLINE, 10 s):
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


def listener_uid(sock: _socket.socket) -> int | None:
    """The uid of the process on the other end of a connected Unix socket, from the
    kernel (SO_PEERCRED: struct ucred; LOCAL_PEERCRED: struct xucred); None where the
    platform has no way to tell."""
    if sys.platform.startswith("linux"):
        raw = sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, 12)  # pid, uid, gid
        return int.from_bytes(raw[4:8], sys.byteorder)
    if sys.platform == "darwin" or "bsd" in sys.platform:
        return parse_xucred(sock.getsockopt(SOL_LOCAL, getattr(_socket, "LOCAL_PEERCRED", LOCAL_PEERCRED),
                                            XUCRED_SIZE))
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
    sock.settimeout(timeout)
    try:
        sock.connect(path)
        _check_listener(sock, path)
    except BaseException:
        sock.close()
        raise
    return sock


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
