"""The server: an ``asyncio.Protocol`` per connection over ``client.protocol``.

Rules of this module:
- it knows framing and connections, not credentials: each request goes to one
  ``dispatch(request, peer)`` callable, which returns a result or an awaitable;
- every request gets exactly one reply, in request order, and errors reach the
  wire only here (``_reply_error``), which is also where they are logged;
- a reply never carries request bytes, a secret or a traceback;
- replies produced by one read go out in one ``transport.write``;
- no connection holds the agent hostage: a frame must arrive whole within
  ``frame_timeout`` of its first byte, a silent connection closes after
  ``idle_timeout``, at the connection cap a process holding fewer connections
  takes one (with no request in flight) of the process holding the most, and a closed
  connection's pending read or unlock is cancelled (writes run to their end: a
  write cut short could leave the cache and the vault apart).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, cast

from agent.transport import NO_PEER, Listener, Peer, Serving
from client import config, errors, protocol

__all__ = [
    "Server",
    "Connection",
    "Dispatch",
    "MAX_CONNECTIONS",
    "CONNECTION_IDLE_TIMEOUT",
    "FRAME_TIMEOUT",
    "PLAIN_RESULTS",
]

log = logging.getLogger("agent.server")

# Far above what one user's connectors open at once, far below the fd limit (the
# agent raises RLIMIT_NOFILE at start): a flood of idle connections cannot starve
# it of descriptors, and the idle deadline reclaims the slots.
MAX_CONNECTIONS: int = config.KEYS["max_connections"].default
# A connection with nothing in flight that sends nothing for this long is closed;
# clients reconnect transparently.
CONNECTION_IDLE_TIMEOUT: float = config.KEYS["connection_idle_timeout"].default
# A frame whose first byte came this long ago and is still not whole is a drip
# (a byte every so often to defeat the idle deadline): the connection is closed.
FRAME_TIMEOUT: float = config.KEYS["frame_timeout"].default
# Ops whose pending work is cancelled when their connection closes: they change
# nothing, or (unlock) change the state only in one step at their end.
_CANCEL_ON_CLOSE = frozenset({"unlock", "get", "metadata", "list", "audit", "hello", "status", "validate", "decrypt"})
# While a request is in flight, stop reading once this much is buffered.
_READ_HIGH_WATER = 2 * (protocol.MAX_FRAME + protocol.HEADER)
# results that are never awaitable: the fast path skips inspect.isawaitable (~0.4 us)
PLAIN_RESULTS = frozenset({str, dict, list, bool, int, float, type(None)})


Dispatch = Callable[[protocol.Request, Peer], Any]


def _reply_error(err: BaseException, op: str | None) -> bytes:
    """The one place errors become replies (and log lines)."""
    if isinstance(err, errors.Internal):
        # the detail goes to the log; the reply carries the fixed message only
        log.error("op %s failed: %s", op or "?", err.message)
        return protocol.encode_error(errors.Internal())
    if isinstance(err, errors.AgentError):
        log.debug("op %s -> %s", op or "?", err.code)
        return protocol.encode_error(err)
    log.error("op %s failed", op or "?", exc_info=err)
    return protocol.encode_error(errors.Internal())


def _reply_ok(result: Any, op: str) -> bytes:
    try:
        return protocol.encode_ok(result)
    except errors.AgentError as e:  # e.g. a listing larger than a frame
        return _reply_error(errors.Internal(f"the reply to {op} is too large: {e.message}"), op)
    except Exception as e:  # noqa: BLE001 - a result msgpack cannot pack is our bug
        return _reply_error(e, op)


class Connection(asyncio.Protocol):
    __slots__ = (
        "buf",
        "closing",
        "frame_started",
        "last_active",
        "peer",
        "pending",
        "pending_op",
        "server",
        "transport",
        "write_paused",
    )

    def __init__(self, server: Server) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.peer = NO_PEER
        self.buf = protocol.FrameBuffer()
        self.pending: asyncio.Future[Any] | None = None
        self.pending_op: str | None = None
        self.last_active = time.monotonic()
        self.frame_started: float | None = None  # when the unfinished frame in buf began
        self.closing = False
        self.write_paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        self.peer = self.server.listener.peer(transport)
        if not self.server.listener.admits(self.peer):
            who = f"sid {self.peer.sid}" if self.peer.uid is None else f"uid {self.peer.uid}"
            log.warning("refused a connection from %s (pid %s)", who, self.peer.pid)
            transport.abort()
            return
        if len(self.server.connections) >= self.server.max_connections and not self.server.make_room(self.peer):
            log.warning(
                "connection cap (%d) reached; refusing a connection of pid %s",
                self.server.max_connections,
                self.peer.pid,
            )
            transport.write(protocol.encode_error(errors.TooManyConnections()))
            transport.close()
            return
        self.server.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.remove(self)
        self.closing = True
        self.buf = protocol.FrameBuffer()  # nothing more of it is read: let go of its bytes
        pending = self.pending
        if pending is not None and self.pending_op in _CANCEL_ON_CLOSE:
            pending.cancel()  # nobody is left to read its reply

    def pause_writing(self) -> None:
        # the peer is not reading its replies: stop reading its requests too
        self.write_paused = True
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.transport is not None and not self.closing and self.pending is None:
            # with a request in flight, later frames wait for it (replies stay in order);
            # its completion (_finished) resumes processing
            self.transport.resume_reading()
            self._process()

    def data_received(self, data: bytes) -> None:
        self.last_active = time.monotonic()
        self.buf.feed(data)
        if self.pending is None and not self.write_paused:
            self._process()
        elif len(self.buf) > _READ_HIGH_WATER and self.transport is not None:
            self.transport.pause_reading()

    def eof_received(self) -> bool | None:
        # the peer is done sending; finish what is in flight, then close
        if self.pending is None:
            return None
        if (
            self.pending_op in _CANCEL_ON_CLOSE
            and self.transport is not None
            and self.server.listener.hung_up(self.transport)
        ):
            return None  # gone, not half-closed: connection_lost cancels what it left
        self.closing = True
        return True

    def _process(self) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        out: list[bytes] = []
        while not self.write_paused:
            try:
                body = self.buf.next_body()
            except errors.BadRequest as e:
                # a bad length: the stream cannot be resynchronised, so reply and close
                out.append(_reply_error(e, None))
                self.closing = True
                break
            if body is None:
                break
            self.frame_started = None
            op: str | None = None
            try:
                request = protocol.decode_request(body)
                op = request.op
                result = self.server.dispatch(request, self.peer)
            except Exception as e:  # noqa: BLE001 - every request gets exactly one reply
                out.append(_reply_error(e, op))
                continue
            if type(result) not in PLAIN_RESULTS and inspect.isawaitable(result):
                # later frames wait: replies stay in request order
                self.pending = asyncio.ensure_future(result)
                self.pending_op = request.op
                self.pending.add_done_callback(functools.partial(self._finished, op=request.op))
                break
            out.append(_reply_ok(result, request.op))
        if self.frame_started is None and len(self.buf):
            self.frame_started = time.monotonic()
        if out:
            transport.write(out[0] if len(out) == 1 else b"".join(out))
        if self.closing and self.pending is None:
            transport.close()
        elif self.pending is None and not self.write_paused:
            transport.resume_reading()

    def _finished(self, fut: asyncio.Future[Any], *, op: str) -> None:
        self.pending = self.pending_op = None
        self.last_active = time.monotonic()
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if fut.cancelled():
            transport.write(_reply_error(errors.Internal("the agent is shutting down"), op))
        elif fut.exception() is not None:
            transport.write(_reply_error(fut.exception() or errors.Internal(), op))
        else:
            transport.write(_reply_ok(fut.result(), op))
        self._process()


class Server:
    """Serves ``dispatch`` on a ``Listener``'s endpoint."""

    def __init__(
        self,
        dispatch: Dispatch,
        listener: Listener,
        *,
        max_connections: int = MAX_CONNECTIONS,
        idle_timeout: float = CONNECTION_IDLE_TIMEOUT,
        frame_timeout: float = FRAME_TIMEOUT,
    ) -> None:
        self.dispatch = dispatch
        self.listener = listener
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self.frame_timeout = frame_timeout
        self.connections: set[Connection] = set()
        self.by_pid: dict[int | None, set[Connection]] = {}  # the same connections, by peer process
        self._server: Serving | None = None
        self._sweeper: asyncio.Task[None] | None = None

    def add(self, conn: Connection) -> None:
        self.connections.add(conn)
        self.by_pid.setdefault(conn.peer.pid, set()).add(conn)

    def remove(self, conn: Connection) -> None:
        self.connections.discard(conn)
        group = self.by_pid.get(conn.peer.pid)
        if group is not None:
            group.discard(conn)
            if not group:
                del self.by_pid[conn.peer.pid]

    def make_room(self, peer: Peer) -> bool:
        """At the cap: close a connection of the process holding the most, if that is not
        ``peer``'s own process and holds more than ``peer``'s would: one with no request in
        flight, idle ones first. So one process (a leaking connector, a flood, a client
        that sends half a frame on each of hundreds) cannot lock the others out."""
        mine = len(self.by_pid.get(peer.pid, ()))
        hog_pid, hog = max(self.by_pid.items(), key=lambda item: len(item[1]), default=(None, set()))
        if len(hog) <= mine + 1:
            return False
        # nothing in flight: idle ones first (longest idle), then those holding an unfinished
        # frame or unread replies (oldest first): a process that keeps hundreds of requests
        # half-sent holds no slot against another process's whole one
        waiting = [c for c in hog if c.pending is None and c.transport is not None]
        if not waiting:
            return False
        victim = min(waiting, key=lambda c: (bool(len(c.buf)) or c.write_paused, c.last_active))
        which = (
            "one holding a half-sent request or unread replies"
            if len(victim.buf) or victim.write_paused
            else "the longest-idle"
        )
        log.warning(
            "connection cap (%d) reached: closing %s of the %d connections of pid %s for pid %s",
            self.max_connections,
            which,
            len(hog),
            hog_pid,
            peer.pid,
        )
        self.remove(victim)
        assert victim.transport is not None
        victim.transport.close()
        return True

    async def start(self) -> None:
        self._server = await self.listener.start(lambda: Connection(self))
        if self.idle_timeout > 0 or self.frame_timeout > 0:
            self._sweeper = asyncio.create_task(self._sweep())

    async def _sweep(self) -> None:
        """Close connections idle past the deadline, and those whose frame does not come
        whole in time (one timer for all, not one each)."""
        periods = [t / 4 for t in (self.idle_timeout, self.frame_timeout) if t > 0]
        period = max(0.05, min([*periods, 30.0]))
        while True:
            await asyncio.sleep(period)
            now = time.monotonic()
            for conn in list(self.connections):
                if conn.pending is not None or conn.transport is None:
                    continue
                started = conn.frame_started
                if (
                    self.frame_timeout > 0
                    and started is not None
                    and not conn.write_paused
                    and started < now - self.frame_timeout
                ):
                    log.warning(
                        "closing a connection of pid %s: a frame did not arrive whole within %g s",
                        conn.peer.pid,
                        self.frame_timeout,
                    )
                    conn.transport.close()
                elif self.idle_timeout > 0 and conn.last_active < now - self.idle_timeout:
                    log.debug("closing a connection idle for %.0f s", self.idle_timeout)
                    conn.transport.close()

    async def close(self, grace: float = 10.0) -> None:
        """Stop accepting, let in-flight requests finish (up to ``grace``), then close."""
        if self._server is not None:
            self._server.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
        pending: list[Awaitable[Any]] = [c.pending for c in self.connections if c.pending is not None]
        if pending:
            await asyncio.wait([asyncio.ensure_future(p) for p in pending], timeout=grace)
        # let the replies of finished requests reach the socket buffers
        await asyncio.sleep(0)
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.close()
