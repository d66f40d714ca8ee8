"""The Windows named pipe endpoint: the pipe, the peer check, one agent per vault.

- The pipe ``\\\\.\\pipe\\credential-agent-<user>[-<profile>]`` (``client.paths``) is
  made by ``client.win32.create_pipe``: a DACL that admits only this user's SID,
  ``PIPE_REJECT_REMOTE_CLIENTS``, byte mode (the frames are the Unix socket's), and
  ``FILE_FLAG_FIRST_PIPE_INSTANCE`` for the first instance, so a name someone else
  made first is refused rather than shared.
- Every connection's peer is checked: ``GetNamedPipeClientProcessId``, then the
  user SID of that process's token must be ours; a peer whose SID cannot be read
  is refused.
- Served with the Proactor loop as ``loop.start_serving_pipe`` does, with our own
  pipe instances (asyncio's ``PipeServer`` makes them with no security descriptor).
- One agent per vault: ``msvcrt.locking`` on the lock file beside the vault.
- A pipe has no half-close: EOF means the client closed its handle.

Importable everywhere (its pure parts are tested on Linux); the Win32 code runs
only on Windows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from agent.transport import ListenError, Peer
from client import win32

__all__ = ["PipeListener", "AlreadyRunning", "single_instance", "ERROR_ACCESS_DENIED"]

log = logging.getLogger("agent.transport.pipe")

# CreateNamedPipeW with FILE_FLAG_FIRST_PIPE_INSTANCE, when the name exists already
ERROR_ACCESS_DENIED = 5


class AlreadyRunning(Exception):
    pass


def _taken(address: str) -> ListenError:
    return ListenError(
        f"the pipe {address} exists already (another agent of this user, or a process of "
        "another user that took the name first); refusing to share it"
    )


if sys.platform == "win32":
    import msvcrt
    from asyncio import windows_utils

    class _PipeServer:
        """asyncio's ``windows_events.PipeServer``, with pipe instances of ours."""

        def __init__(self, address: str) -> None:
            self.address: str | None = address
            self.free: set[windows_utils.PipeHandle] = set()
            self.accepting: asyncio.Future[Any] | None = None
            self.pipe: windows_utils.PipeHandle | None = None
            try:
                self.pipe = self._instance(first=True)
            except PermissionError:
                raise _taken(address) from None
            except OSError as e:
                if getattr(e, "winerror", None) == ERROR_ACCESS_DENIED:
                    raise _taken(address) from None
                raise ListenError(f"cannot create the pipe {address}: {e.strerror or e}") from None

        def _instance(self, first: bool) -> windows_utils.PipeHandle | None:
            if self.address is None:
                return None
            pipe = windows_utils.PipeHandle(win32.create_pipe(self.address, first))
            self.free.add(pipe)
            return pipe

        def next_unconnected(self) -> windows_utils.PipeHandle | None:
            # there is always one instance waiting, so a client never finds no pipe
            pipe, self.pipe = self.pipe, self._instance(first=False)
            return pipe

        def close(self) -> None:
            if self.accepting is not None:
                self.accepting.cancel()
                self.accepting = None
            if self.address is not None:
                for pipe in self.free:
                    pipe.close()
                self.free.clear()
                self.pipe = self.address = None

    def _serve(loop: Any, server: _PipeServer, factory: Callable[[], asyncio.Protocol], address: str) -> None:
        """``ProactorEventLoop.start_serving_pipe``'s accept loop (CPython 3.11-3.13), on ``server``."""

        def accept(f: asyncio.Future[Any] | None = None) -> None:
            pipe = None
            try:
                if f is not None:
                    pipe = f.result()
                    server.free.discard(pipe)
                    if server.address is None:
                        pipe.close()  # connected while we were closing
                        return
                    loop._make_duplex_pipe_transport(pipe, factory(), extra={"addr": address})
                pipe = server.next_unconnected()
                if pipe is None:
                    return
                f = loop._proactor.accept_pipe(pipe)
            except BrokenPipeError:  # the client went away before we saw it
                if pipe is not None and pipe.fileno() != -1:
                    pipe.close()
                loop.call_soon(accept)
            except OSError as exc:
                if pipe is not None and pipe.fileno() != -1:
                    log.warning("accepting on %s failed: %s", address, exc)
                    pipe.close()
                loop.call_soon(accept)
            except asyncio.CancelledError:
                if pipe is not None:
                    pipe.close()
            else:
                server.accepting = f
                f.add_done_callback(accept)

        loop.call_soon(accept)

    @contextlib.contextmanager
    def single_instance(lock_file: Path) -> Iterator[int]:
        """Hold a lock on the first byte of ``lock_file`` (released when the process dies)."""
        try:
            fd = os.open(lock_file, os.O_RDWR | os.O_CREAT | os.O_BINARY | os.O_NOINHERIT, 0o600)
        except OSError as e:
            raise ListenError(f"cannot open the lock file {lock_file}: {e.strerror}") from None
        try:
            try:
                msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            except OSError:
                raise AlreadyRunning() from None
            os.write(fd, f"{os.getpid()}\n".encode())
            yield fd
        finally:
            os.close(fd)

    class PipeListener:
        """The agent's named pipe."""

        activated = False  # no service manager hands a pipe over

        def __init__(self, address: str) -> None:
            self.address = address
            self.sid = win32.current_sid()
            self._server: _PipeServer | None = None

        def __repr__(self) -> str:
            return f"PipeListener({self.address!r})"

        async def start(self, factory: Callable[[], asyncio.Protocol]) -> _PipeServer:
            loop = asyncio.get_running_loop()
            if not hasattr(loop, "_proactor"):
                raise ListenError("the named pipe needs asyncio's Proactor event loop")
            self._server = server = _PipeServer(self.address)
            _serve(loop, server, factory, self.address)
            return server

        def peer(self, transport: asyncio.BaseTransport) -> Peer:
            pipe = transport.get_extra_info("pipe")
            pid: int | None = None
            try:
                pid = win32.client_pid(pipe.fileno())
                return Peer(pid, None, None, sid=win32.sid_of_process(pid))
            except OSError as e:
                log.warning("cannot tell who is on the other end of a pipe connection (pid %s): %s", pid, e)
                return Peer(pid, None, None)  # no SID: refused by admits()

        def admits(self, peer: Peer) -> bool:
            return peer.sid is not None and peer.sid == self.sid

        def hung_up(self, transport: asyncio.BaseTransport) -> bool:
            return True  # no half-close on a pipe: EOF means the client closed it

        async def taken_over(self) -> None:
            # the first instance is ours, so nobody else can serve this name while we do
            await asyncio.Event().wait()

        def close(self) -> None:
            if self._server is not None:
                self._server.close()

else:

    @contextlib.contextmanager
    def single_instance(lock_file: Path) -> Iterator[int]:
        raise ListenError("named pipes exist on Windows only")
        yield 0  # pragma: no cover - a generator, for contextmanager

    class PipeListener:
        def __init__(self, address: str) -> None:
            raise ListenError(f"named pipes exist on Windows only; cannot serve {address}")
