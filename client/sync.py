"""The blocking client: a thin transport under the operations of ``client._ops``.

Thread-safe (one lock around each exchange), connects lazily, reconnects once after
a dropped connection when resending is safe (``protocol.retry_allowed``), and raises
the typed errors of ``client.errors``. Every typed method (``get``, ``store``, ...)
comes from ``client._ops.SyncOperations`` and ends in ``call`` or ``call_many``.

A connection carries one exchange at a time and replies come in request order, so
an exchange that ends early for any reason (a timeout, Ctrl-C, an exception raised
in a signal handler) drops its connection: otherwise the late reply would answer
the next request, with another credential's value. For the same reason a process
never uses a connection its parent opened before ``os.fork()``: the child forgets
it at the fork (``transport.reset_after_fork``), so a call checks nothing.

A call is one ``sendall`` and, for a reply that arrives whole, one ``recv``: the
timeout is the kernel's, on a blocking socket (``transport.set_timeout``).

A batch (``call_many``) never waits on its own replies, whatever its size: the agent
stops reading a connection whose replies are not read (so that one client cannot fill
its memory), so a client that wrote a whole batch before reading would block in its
write while the agent blocks in its own. The batch goes out in non-blocking writes, and
whenever the socket takes no more, the replies that have come are read before the
next write (``_send_reading``). Reading while writing rather than bounding the requests
in flight: a bound in requests or bytes cannot bound the replies (a ``get`` may answer
256 KiB), so no window is safe for every batch, while a client that always reads is
never the one the agent waits on; and a batch that fits the socket costs the same one
write as before. A Windows pipe has no non-blocking write here: there a batch goes out
in windows of ``PIPE_WINDOW`` requests, each window's replies read before the next,
which holds as long as one window's replies fit the pipe's buffers and the agent's.
"""

from __future__ import annotations

import _socket
import _thread
import os
import sys

from client import _ops, errors, paths, protocol, transport
from client.transport import DEFAULT_TIMEOUT

# A process that wants one key pays for ``import client``: the C modules behind
# socket and threading serve as well as the wrappers, which would add enum,
# selectors and more; typing, collections and pathlib are for the type checker.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from pathlib import Path
    from typing import Any

__all__ = ["Client", "DEFAULT_TIMEOUT"]

_RECV = 65536
# how long to look for the agent's last frame on a connection it closed under our write
REFUSAL_WAIT = 1.0
_SLOW_OPS = protocol.SLOW_OPS  # for call(), the hot path: the common op needs no timeout_for
# requests of a batch sent on a Windows pipe before their replies are read
PIPE_WINDOW = 64


class Client(_ops.SyncOperations):
    """Blocking client of the credential agent.

    >>> with Client() as c:
    ...     key = c.get("huggingface")
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        autostart: bool | None = None,
        on_expired: str | None = None,
    ) -> None:
        self._path = os.fspath(path) if path is not None else paths.socket_file()
        self.timeout = timeout
        self._autostart = autostart
        super().__init__(on_expired)
        self._sock: transport.Stream | None = None
        self._buf = protocol.FrameBuffer()
        self._lock = _thread.allocate_lock()
        transport.reset_after_fork(self)

    @property
    def path(self) -> Path:
        from pathlib import Path

        return Path(self._path)

    def __repr__(self) -> str:
        return f"Client(path={self._path!r}, connected={self._sock is not None})"

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            self._drop()

    def _after_fork(self) -> None:
        """In a child of the process that made this client, at the fork (one thread):
        forget the parent's connection (closing only this process's copy of the
        descriptor, so the parent's connection stays up) and its lock (a parent
        thread may have held it)."""
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()  # close(2) only: no shutdown, which would cut the parent off
        self._buf = protocol.FrameBuffer()
        self._lock = _thread.allocate_lock()

    def _drop(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._buf = protocol.FrameBuffer()

    def _connect_or_start(self, ops: Iterable[str]) -> transport.Stream:
        try:
            return transport.connect(self._path, self.timeout)
        except (FileNotFoundError, ConnectionRefusedError):
            from client import _autostart  # here: a process that finds its agent never needs it

            if not _autostart.enabled(self._autostart):
                raise errors.AgentUnavailable(_autostart.unavailable_message(self._path)) from None
        why = _autostart.start_agent(max(self.timeout, 10.0), unlock=not protocol.UNLOCKS.isdisjoint(ops))
        if why is not None:
            raise errors.AgentUnavailable(f"could not start a credential agent at {self._path}: {why}")
        try:
            return transport.connect(self._path, self.timeout)
        except (FileNotFoundError, ConnectionRefusedError) as e:
            raise errors.AgentUnavailable(f"no credential agent at {self._path}") from e

    def _connect(self, ops: Iterable[str] = ()) -> transport.Stream:
        try:
            return self._connect_or_start(ops)
        except errors.AgentError:
            raise
        except OSError as e:  # e.g. a path too long for a Unix socket, a permission problem
            raise errors.AgentUnavailable(f"cannot connect to {self._path}: {e.strerror or e}") from None

    def _read_body(self, sock: transport.Stream) -> bytes:
        buf = self._buf
        while True:
            body = buf.next_body()
            if body is not None:
                return body
            chunk = sock.recv(_RECV)
            if not chunk:
                raise ConnectionResetError("the agent closed the connection")
            buf.feed(chunk)

    def _send_reading(
        self, sock: transport.Stream, frames: bytes, count: int, bodies: list[bytes], timeout: float
    ) -> None:
        """Send ``frames`` (``count`` requests), reading into ``bodies`` the replies that
        come while the socket takes no more (see the module's docstring). ``TimeoutError``
        when for ``timeout`` seconds it neither takes a byte nor gives one."""
        if sys.platform == "win32" or not isinstance(sock, _socket.socket):
            sock.sendall(frames)  # a Windows pipe: call_many sends it a window at a time
            return
        import select  # a C module: only a batch larger than the socket's buffers needs it

        view = memoryview(frames)
        done, total = 0, len(view)
        buf = self._buf
        poller: Any = None  # a select.poll, made on the first full buffer (Windows has none)
        while done < total:
            try:
                done += sock.send(view[done:], _socket.MSG_DONTWAIT)
                continue
            except BlockingIOError:
                pass
            if poller is None:
                poller = select.poll()
                poller.register(sock, select.POLLIN | select.POLLOUT)
            ready = poller.poll(max(1, round(timeout * 1000)))
            if not ready:
                raise TimeoutError
            if not ready[0][1] & ~select.POLLOUT:
                continue  # room to write again, nothing to read
            try:
                chunk = sock.recv(_RECV, _socket.MSG_DONTWAIT)
            except BlockingIOError:
                continue
            if not chunk:
                raise ConnectionResetError("the agent closed the connection")
            buf.feed(chunk)
            while len(bodies) < count and (body := buf.next_body()) is not None:
                bodies.append(body)

    def _refusal(self, sock: transport.Stream) -> errors.AgentError | None:
        """What the agent said before it closed a connection our write then failed on: at its
        connection cap it answers a new connection with one error frame and closes it, and
        that frame, still in our receive buffer, says why better than a broken pipe."""
        try:
            transport.set_timeout(sock, REFUSAL_WAIT)
            protocol.decode_reply(self._read_body(sock))
        except errors.AgentError as e:
            return e
        except (OSError, ValueError):
            return None
        return None

    def _exchange(self, frames: bytes, count: int, ops: Iterable[str], timeout: float) -> list[bytes]:
        """Send ``frames`` and read ``count`` replies. On a connection that fails
        before any reply arrives, resend once on a new one if ``retry_allowed``.
        Any other way out of an unfinished exchange drops the connection."""
        for attempt in (0, 1):
            if self._sock is None:
                self._sock = self._connect(ops)
            sock = self._sock
            bodies: list[bytes] = []
            sent = False
            try:
                if timeout != self.timeout:
                    transport.set_timeout(sock, timeout)
                if count == 1:
                    sock.sendall(frames)
                else:
                    self._send_reading(sock, frames, count, bodies, timeout)
                sent = True
                read = self._read_body
                while len(bodies) < count:
                    bodies.append(read(sock))
                if timeout != self.timeout:
                    transport.set_timeout(sock, self.timeout)
                return bodies
            except (BlockingIOError, TimeoutError):  # the kernel's timeout (EAGAIN)
                self._drop()
                raise errors.AgentTimeout(f"the credential agent did not answer within {timeout:g} s") from None
            except OSError as e:
                refusal = None if sent else self._refusal(sock)
                self._drop()
                if refusal is not None:
                    raise refusal from None
                if bodies or attempt or not protocol.retry_allowed(ops, sent):
                    raise errors.AgentUnavailable(f"lost the connection to the agent: {e.strerror or e}") from None
            except errors.BadRequest:
                self._drop()
                raise errors.ProtocolError("the agent sent an oversized or empty frame") from None
            except BaseException:  # KeyboardInterrupt, an exception from a signal handler
                self._drop()
                raise
        raise AssertionError("unreachable")

    def call(self, op: str, args: Mapping[str, Any] | None = None) -> Any:
        """Send one request and return its result (or raise its error)."""
        frame = protocol.encode_request(op, args)
        timeout = self.timeout if op not in _SLOW_OPS else transport.timeout_for(op, self.timeout)
        with self._lock:
            (body,) = self._exchange(frame, 1, (op,), timeout)
        return protocol.decode_reply(body)

    def call_many(self, requests: Iterable[tuple[str, Mapping[str, Any]]]) -> list[Any]:
        """Pipeline requests: send them, reading the replies in order as they come.

        Returns each result, or the ``AgentError`` instance for a request that failed.
        """
        requests = list(requests)
        ops = [op for op, _ in requests]
        frames = [protocol.encode_request(op, args) for op, args in requests]
        timeout = max([self.timeout, *(transport.timeout_for(op, self.timeout) for op in ops)])
        # a socket reads while it writes (_send_reading): the whole batch is one exchange
        window = PIPE_WINDOW if transport.is_pipe(self._path) else max(1, len(frames))
        bodies: list[bytes] = []
        with self._lock:
            for i in range(0, max(1, len(frames)), window):
                part = frames[i : i + window]
                bodies += self._exchange(b"".join(part), len(part), ops[i : i + window], timeout)
        results: list[Any] = []
        for body in bodies:
            try:
                results.append(protocol.decode_reply(body))
            except errors.AgentError as e:
                results.append(e)
        return results
