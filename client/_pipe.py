"""Reaching the agent through its Windows named pipe, for both clients.

- The blocking client opens the pipe for overlapped I/O (``_winapi``, as
  multiprocessing's ``PipeConnection``) so that every read and write has the
  client's timeout; ``PipeStream`` offers the few socket methods ``Client`` uses.
- The asyncio client opens the same way and hands the handle to the Proactor loop
  (asyncio's default on Windows) as ``loop.create_pipe_connection`` does with its
  own, which it opens without the flags below.
- Both open the pipe at identification level (``SECURITY_SQOS_PRESENT |
  SECURITY_IDENTIFICATION``): a process that took the pipe's name while no agent ran
  can learn who connected, but cannot act as this user (impersonation needs more than
  identification), even before the check below refuses it.
- Before a byte is sent, the process that created the pipe must run as this user
  (``GetNamedPipeServerProcessId``, then its token's user SID): a pipe name is first
  come, first served, and another user may have taken ours.
- A missing pipe is ``FileNotFoundError``, as a missing socket file, so autostart
  works the same.
"""

from __future__ import annotations

import sys

from client import errors, win32

TYPE_CHECKING = False
if TYPE_CHECKING:
    import asyncio
    from collections.abc import Callable
    from typing import TypeVar

    ProtocolT = TypeVar("ProtocolT", bound=asyncio.BaseProtocol)

__all__ = ["check_server"]


def check_server(sid: str, address: str) -> None:
    """Refuse a pipe made by a process of another user."""
    if sys.platform == "win32" and sid != win32.current_sid():
        raise errors.UntrustedSocket(
            f"refusing {address}: the process serving it runs as {sid}, not as this user; nothing was sent"
        )


if sys.platform == "win32":
    import _winapi
    import time
    from typing import Any, cast

    __all__ += ["PipeStream", "connect", "connect_async"]

    _GENERIC_READ_WRITE = 0x80000000 | 0x40000000
    _WAIT_TIMEOUT = 0x102
    _ERROR_PIPE_BUSY = 231

    def _server_sid(handle: int, address: str) -> str:
        try:
            return win32.sid_of_process(win32.server_pid(handle))
        except OSError as e:
            raise errors.UntrustedSocket(f"refusing {address}: cannot tell who serves it ({e.strerror})") from None

    class PipeStream:
        """A connected pipe handle with ``sendall``, ``recv``, ``settimeout``, ``close``."""

        def __init__(self, handle: int, timeout: float | None) -> None:
            self._handle: int | None = handle
            self._timeout = timeout

        def settimeout(self, timeout: float | None) -> None:
            self._timeout = timeout

        def _wait(self, ov: _winapi.Overlapped, err: int) -> int:
            if err == _winapi.ERROR_IO_PENDING:
                ms = _winapi.INFINITE if self._timeout is None else int(self._timeout * 1000)
                try:
                    if _winapi.WaitForMultipleObjects([ov.event], False, ms) == _WAIT_TIMEOUT:
                        raise TimeoutError()
                except BaseException:
                    ov.cancel()
                    ov.GetOverlappedResult(True)
                    raise
            n, err = ov.GetOverlappedResult(True)
            if err:
                raise OSError(0, "the pipe operation failed", None, err)
            return int(n)

        def sendall(self, data: bytes) -> None:
            view = memoryview(data)
            while view:
                ov, err = _winapi.WriteFile(self._fileno(), view, overlapped=True)
                view = view[self._wait(ov, err) :]

        def recv(self, size: int) -> bytes:
            try:
                ov, err = _winapi.ReadFile(self._fileno(), size, overlapped=True)
                self._wait(ov, err)
            except BrokenPipeError:  # the agent closed its end
                return b""
            return ov.getbuffer() or b""

        def _fileno(self) -> int:
            if self._handle is None:
                raise OSError(0, "the pipe is closed")
            return self._handle

        def close(self) -> None:
            handle, self._handle = self._handle, None
            if handle is not None:
                _winapi.CloseHandle(handle)

    def _open(address: str) -> int:
        """One attempt at the pipe, for overlapped I/O and at identification level."""
        return int(
            _winapi.CreateFile(
                address,
                _GENERIC_READ_WRITE,
                0,
                _winapi.NULL,
                _winapi.OPEN_EXISTING,
                _winapi.FILE_FLAG_OVERLAPPED | win32.SECURITY_SQOS_PRESENT | win32.SECURITY_IDENTIFICATION,
                _winapi.NULL,
            )
        )

    def _busy(e: OSError) -> bool:
        return getattr(e, "winerror", None) == _ERROR_PIPE_BUSY

    def connect(address: str, timeout: float) -> PipeStream:
        deadline = time.monotonic() + timeout
        while True:
            try:
                handle = _open(address)
                break
            except OSError as e:
                left = deadline - time.monotonic()
                if not _busy(e) or left <= 0:
                    raise
                # every instance is taken for the moment: wait for the agent to make the next
                _winapi.WaitNamedPipe(address, max(1, int(left * 1000)))
        stream = PipeStream(handle, timeout)
        try:
            check_server(_server_sid(handle, address), address)
        except BaseException:
            stream.close()
            raise
        return stream

    async def connect_async(address: str, factory: Callable[[], ProtocolT]) -> ProtocolT:
        import asyncio
        from asyncio import windows_utils

        loop = asyncio.get_running_loop()
        if not isinstance(loop, asyncio.ProactorEventLoop):
            raise errors.AgentUnavailable("the agent's named pipe needs asyncio's Proactor event loop")
        delay = 0.001
        while True:  # as asyncio's own connect_pipe: no overlapped open of a pipe exists
            try:
                handle = _open(address)
                break
            except OSError as e:
                if not _busy(e):
                    raise
            await asyncio.sleep(delay)  # the caller's deadline bounds the whole connect
            delay = min(delay * 2, 0.1)
        try:
            check_server(_server_sid(handle, address), address)
        except BaseException:
            _winapi.CloseHandle(handle)
            raise
        conn = factory()
        # what loop.create_pipe_connection does with the handle it opens itself (without
        # the SECURITY_* flags): a duplex transport over it, registered with the proactor
        cast("Any", loop)._make_duplex_pipe_transport(windows_utils.PipeHandle(handle), conn, extra={"addr": address})
        return conn
