"""The asyncio client: the same protocol as ``Client``, over an ``asyncio.Protocol``.

Task-safe (one asyncio.Lock around each exchange), connects lazily, reconnects
once after a dropped connection when resending is safe. Imported on first use of
``client.AsyncClient`` so that ``import client`` stays free of asyncio.

As in ``Client``, an exchange that ends early (cancelled by ``wait_for``, a
TaskGroup or an outer timeout) aborts its connection, so its late reply can never
answer the next call; and a child process never uses its parent's connection.

A Protocol rather than streams: an exchange is one write and one future that
``data_received`` resolves once every reply is in (streams cost a future per
read, and ``wait_for`` a task per call: together ~2x the round trip).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, cast

from client import _autostart, errors, paths, protocol
from client._sync import (
    DEFAULT_TIMEOUT,
    SLOW_TIMEOUT,
    ListPages,
    _name_args,
    credentials_of,
    expiry_policy,
    field_name,
    get_args,
    name_pair,
    unwrap_get,
    write_args,
)
from client.protocol import DEFAULT_TYPE

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


class AsyncClient:
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
        self.on_expired = expiry_policy(on_expired)
        self._warned: set[tuple[str, str]] = set()
        self._conn: _Connection | None = None
        self._lock = asyncio.Lock()
        self._pid = os.getpid()  # the process the connection belongs to

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
        """In a child process: forget the parent's connection without touching it
        (its transport belongs to the parent's event loop; the child's copy of the
        descriptor closes with it) and the lock, which may be bound to that loop."""
        self._conn = None
        self._lock = asyncio.Lock()
        self._pid = os.getpid()

    async def _try_connect(self) -> _Connection:
        paths.check_socket(self.path)
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_unix_connection(_Connection, str(self.path))
        return conn

    async def _connect_or_start(self) -> _Connection:
        try:
            return await self._try_connect()
        except (FileNotFoundError, ConnectionRefusedError):
            if not _autostart.enabled(self._autostart):
                raise errors.AgentUnavailable(_autostart.unavailable_message(self.path)) from None
        if not await asyncio.to_thread(_autostart.start_agent, max(self.timeout, 10.0)):
            raise errors.AgentUnavailable(f"could not start a credential agent at {self.path}")
        try:
            return await self._try_connect()
        except (FileNotFoundError, ConnectionRefusedError) as e:
            raise errors.AgentUnavailable(f"no credential agent at {self.path}") from e

    async def _connect(self) -> _Connection:
        try:
            return await self._connect_or_start()
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
                        conn = self._conn = await self._connect()
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

    def _timeout_for(self, op: str) -> float:
        return max(self.timeout, SLOW_TIMEOUT) if op in protocol.SLOW_OPS else self.timeout

    async def call(self, op: str, args: Mapping[str, Any] | None = None) -> Any:
        frame = protocol.encode_request(op, args)
        if self._pid != os.getpid():
            self._after_fork()
        async with self._lock:
            (body,) = await self._exchange(frame, 1, (op,), self._timeout_for(op))
        return protocol.decode_reply(body)

    async def call_many(self, requests: Iterable[tuple[str, Mapping[str, Any]]]) -> list[Any]:
        """Pipeline requests; returns each result or the ``AgentError`` it raised."""
        requests = list(requests)
        ops = [op for op, _ in requests]
        frames = [protocol.encode_request(op, args) for op, args in requests]
        timeout = max([self.timeout, *(self._timeout_for(op) for op in ops)])
        if self._pid != os.getpid():
            self._after_fork()
        async with self._lock:
            bodies = await self._exchange(b"".join(frames), len(frames), ops, timeout)
        results: list[Any] = []
        for body in bodies:
            try:
                results.append(protocol.decode_reply(body))
            except errors.AgentError as e:
                results.append(e)
        return results

    # typed operations: one line each
    async def hello(self) -> dict[str, Any]:
        result: dict[str, Any] = await self.call("hello")
        return result

    async def status(self) -> dict[str, Any]:
        result: dict[str, Any] = await self.call("status")
        return result

    async def stop(self) -> None:
        await self.call("stop")

    async def unlock(self, passphrase: str | None = None) -> None:
        await self.call("unlock", {} if passphrase is None else {"passphrase": passphrase})

    async def lock(self) -> None:
        await self.call("lock")

    async def store(
        self,
        platform: str,
        value: str,
        credential_type: str = DEFAULT_TYPE,
        metadata: Mapping[str, Any] | None = None,
        *,
        validate: bool = True,
        expires_at: float | None = None,
    ) -> None:
        await self.call("store", write_args(platform, value, credential_type, metadata, validate, expires_at))

    async def update(
        self,
        platform: str,
        value: str,
        credential_type: str = DEFAULT_TYPE,
        metadata: Mapping[str, Any] | None = None,
        *,
        validate: bool = True,
        expires_at: float | None = None,
    ) -> None:
        await self.call("update", write_args(platform, value, credential_type, metadata, validate, expires_at))

    async def get(self, platform: str, credential_type: str = DEFAULT_TYPE) -> str:
        result = await self.call("get", get_args(platform, credential_type, self.on_expired))
        return unwrap_get(result, platform, credential_type, self.on_expired, self._warned)

    async def get_many(self, names: Iterable[str | tuple[str, str]]) -> list[str]:
        pairs = [name_pair(n) for n in names]
        results = await self.call_many([("get", get_args(p, t, self.on_expired)) for p, t in pairs])
        for r in results:
            if isinstance(r, errors.AgentError):
                raise r
        return [unwrap_get(r, p, t, self.on_expired, self._warned) for r, (p, t) in zip(results, pairs, strict=True)]

    async def credentials_for(self, platform: str) -> dict[str, str]:
        """Every credential of ``platform`` keyed by type: ``{"api_key": ...}``."""
        types = credentials_of(platform, await self.list())
        values = await self.get_many([(platform, t) for t in types])
        return {field_name(t): v for t, v in zip(types, values, strict=True)}

    async def delete(self, platform: str, credential_type: str = DEFAULT_TYPE) -> None:
        await self.call("delete", _name_args(platform, credential_type))

    async def list(self) -> list[dict[str, Any]]:
        """Every credential's entry, a page at a time (see ``Client.list``)."""
        pages = ListPages()
        while (args := pages.next_args()) is not None:
            pages.add(await self.call("list", args))
        return pages.entries

    async def metadata(self, platform: str, credential_type: str = DEFAULT_TYPE) -> dict[str, Any]:
        result: dict[str, Any] = await self.call("metadata", _name_args(platform, credential_type))
        return result

    async def validate(self, platform: str, value: str) -> bool:
        return bool((await self.call("validate", {"platform": platform, "value": value}))["valid"])


async def acredentials_for(platform: str, *, client: AsyncClient | None = None) -> dict[str, str]:
    """The async twin of ``client.credentials_for``."""
    if client is not None:
        return await client.credentials_for(platform)
    async with AsyncClient() as c:
        return await c.credentials_for(platform)
