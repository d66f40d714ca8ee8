"""The asyncio client: the operations of ``client._ops``, awaited, over an ``asyncio.Protocol``.

Task-safe (one asyncio.Lock around each exchange), connects lazily, reconnects
once after a dropped connection when resending is safe. Every typed method comes
from ``client._ops.AsyncOperations`` and ends in ``call`` or ``call_many``, as
``Client``'s do. Imported on first use of ``client.AsyncClient`` so that
``import client`` stays free of asyncio.

As in ``Client``, an exchange that ends early (cancelled by ``wait_for``, a
TaskGroup or an outer timeout) aborts its connection, so its late reply can never
answer the next call; and a child process never uses its parent's connection.

A Protocol rather than streams: an exchange is one write and one future that
``data_received`` resolves once every reply is in (streams cost a future per
read, and ``wait_for`` a task per call; the AsyncClient rows of benchmarks/run.py
show what is left).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, cast

from client import _ops, errors, paths, protocol, transport
from client.transport import DEFAULT_TIMEOUT

__all__ = ["AsyncClient", "acredentials_for"]


class _Connection(asyncio.Protocol):
    """One connection to the agent; collects the reply bodies of the exchange in flight."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = protocol.FrameBuffer()
        self.bodies: list[bytes] = []
        self.want = 0
        self.waiter: asyncio.Future[None] | None = None
        self.lost: BaseException | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.buf.feed(data)
        bodies = self.bodies
        try:
            while len(bodies) < self.want:
                body = self.buf.next_body()
                if body is None:
                    return
                bodies.append(body)
        except errors.BadRequest:
            self._fail(errors.ProtocolError("the agent sent an oversized or empty frame"))
            if self.transport is not None:
                self.transport.abort()
            return
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = exc or ConnectionResetError("the agent closed the connection")
        self._fail(self.lost)

    def _fail(self, exc: BaseException) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    async def exchange(self, frames: bytes, count: int, bodies: list[bytes], timeout: float) -> None:
        """Send ``frames`` and wait for ``count`` replies, or raise TimeoutError."""
        if self.lost is not None:
            raise self.lost
        if count == 0:  # an empty batch: no reply will come to wake the waiter (Client returns at once too)
            return
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        self.bodies, self.want = bodies, count
        self.waiter = waiter = loop.create_future()
        # a timer on the future itself: cheaper than asyncio.timeout() per call
        timer = loop.call_later(timeout, _expire, waiter)
        try:
            self.transport.write(frames)
            await waiter
        finally:
            timer.cancel()
            self.waiter = None
            self.want = 0


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


class AsyncClient(_ops.AsyncOperations):
    """Asyncio client of the credential agent.

    >>> async with AsyncClient() as c:
    ...     key = await c.get("runpod")
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        autostart: bool | None = None,
        on_expired: str | None = None,
    ) -> None:
        self.path = Path(path) if path is not None else paths.socket_path()
        self.timeout = timeout
        self._autostart = autostart
        super().__init__(on_expired)
        self._conn: _Connection | None = None
        self._lock = asyncio.Lock()
        transport.reset_after_fork(self)

    def __repr__(self) -> str:
        return f"AsyncClient(path={str(self.path)!r}, connected={self._conn is not None})"

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        async with self._lock:
            await self._drop()

    async def _drop(self) -> None:
        self._abort()

    def _abort(self) -> None:
        """Drop the connection now, discarding anything unsent (synchronous, so that
        it completes even in a task being cancelled)."""
        conn, self._conn = self._conn, None
        if conn is not None and conn.transport is not None:
            conn.transport.abort()

    def _after_fork(self) -> None:
        """In a child process, at the fork: forget the parent's connection without
        touching it (its transport belongs to the parent's event loop; the child's
        copy of the descriptor closes with it) and the lock, which may be bound to that loop."""
        self._conn = None
        self._lock = asyncio.Lock()

    async def _connect_or_start(self, ops: Iterable[str]) -> _Connection:
        try:
            return await transport.connect_async(str(self.path), _Connection)
        except (FileNotFoundError, ConnectionRefusedError):
            from client import _autostart  # here: a process that finds its agent never needs it

            if not _autostart.enabled(self._autostart):
                raise errors.AgentUnavailable(_autostart.unavailable_message(self.path)) from None
        unlock = not protocol.UNLOCKS.isdisjoint(ops)
        why = await asyncio.to_thread(_autostart.start_agent, max(self.timeout, 10.0), unlock)
        if why is not None:
            raise errors.AgentUnavailable(f"could not start a credential agent at {self.path}: {why}")
        try:
            return await transport.connect_async(str(self.path), _Connection)
        except (FileNotFoundError, ConnectionRefusedError) as e:
            raise errors.AgentUnavailable(f"no credential agent at {self.path}") from e

    async def _connect(self, ops: Iterable[str] = ()) -> _Connection:
        try:
            return await self._connect_or_start(ops)
        except errors.AgentError:
            raise
        except OSError as e:  # e.g. a path too long for a Unix socket, a permission problem
            raise errors.AgentUnavailable(f"cannot connect to {self.path}: {e.strerror or e}") from None

    async def _exchange(self, frames: bytes, count: int, ops: Iterable[str], timeout: float) -> list[bytes]:
        for attempt in (0, 1):
            bodies: list[bytes] = []
            sent = False
            try:
                conn = self._conn
                if conn is None:
                    async with asyncio.timeout(self.timeout):
                        conn = self._conn = await self._connect(ops)
                # the write is buffered by the transport: from here the agent may get it
                sent = conn.lost is None
                await conn.exchange(frames, count, bodies, timeout)
                return bodies
            except TimeoutError:
                self._abort()
                raise errors.AgentTimeout(f"the credential agent did not answer within {timeout:g} s") from None
            except errors.AgentError:  # no agent, untrusted socket, bad reply: no retry
                self._abort()
                raise
            except OSError as e:
                self._abort()
                if bodies or attempt or not protocol.retry_allowed(ops, sent):
                    raise errors.AgentUnavailable(f"lost the connection to the agent: {e}") from None
            except BaseException:  # cancelled: the reply must not answer the next call
                self._abort()
                raise
        raise AssertionError("unreachable")

    async def call(self, op: str, args: Mapping[str, Any] | None = None) -> Any:
        """Send one request and return its result (or raise its error)."""
        frame = protocol.encode_request(op, args)
        async with self._lock:
            (body,) = await self._exchange(frame, 1, (op,), transport.timeout_for(op, self.timeout))
        return protocol.decode_reply(body)

    async def call_many(self, requests: Iterable[tuple[str, Mapping[str, Any]]]) -> list[Any]:
        """Pipeline requests; returns each result or the ``AgentError`` it raised."""
        requests = list(requests)
        ops = [op for op, _ in requests]
        frames = [protocol.encode_request(op, args) for op, args in requests]
        timeout = max([self.timeout, *(transport.timeout_for(op, self.timeout) for op in ops)])
        async with self._lock:
            bodies = await self._exchange(b"".join(frames), len(frames), ops, timeout)
        results: list[Any] = []
        for body in bodies:
            try:
                results.append(protocol.decode_reply(body))
            except errors.AgentError as e:
                results.append(e)
        return results


async def acredentials_for(platform: str, *, client: AsyncClient | None = None) -> dict[str, str]:
    """The async twin of ``client.credentials_for``."""
    if client is not None:
        return await client.credentials_for(platform)
    async with AsyncClient() as c:
        return await c.credentials_for(platform)
