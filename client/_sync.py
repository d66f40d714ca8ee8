"""The blocking client: a thin transport over ``client.protocol``.

Thread-safe (one lock around each exchange), connects lazily, reconnects once after
a dropped connection when resending is safe (``protocol.retry_allowed``), and raises
the typed errors of ``client.errors``.

A connection carries one exchange at a time and replies come in request order, so
an exchange that ends early for any reason (a timeout, Ctrl-C, an exception raised
in a signal handler) drops its connection: otherwise the late reply would answer
the next request, with another credential's value. For the same reason a process
never uses a connection its parent opened before ``os.fork()``.
"""

from __future__ import annotations

import _socket
import _thread
import os
import time
from os import getpid as _getpid

from client import _autostart, errors, paths, protocol
from client.protocol import DEFAULT_TYPE

# A process that wants one key pays for ``import client``: the C modules behind
# socket and threading serve as well as the wrappers, which would add enum,
# selectors and more; typing, collections and pathlib are for the type checker.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from pathlib import Path
    from typing import Any

__all__ = ["Client", "DEFAULT_TIMEOUT", "ON_EXPIRED"]

# Longer than the agent's keystore deadline (agent.keystore.DEFAULT_DEADLINE, 10 s):
# a request that waits on a hung keystore gets the agent's keystore_unavailable
# error, which says what is wrong, rather than a bare timeout.
DEFAULT_TIMEOUT = 15.0
# For protocol.SLOW_OPS (init, unlock, rotate_key): scrypt, the wrong-passphrase
# delay (up to 10 s) and a keystore round trip (up to 10 s) add up past the default.
SLOW_TIMEOUT = 60.0
_RECV = 65536
# What `get` does with a credential past its expiry: log a warning and return it
# (default), raise `Expired`, or not ask the agent about expiry at all.
ON_EXPIRED = ("warn", "refuse", "ignore")
ON_EXPIRED_ENV = "CREDENTIAL_AGENT_ON_EXPIRED"
# taken by a child process's first call that finds a client made by its parent
_fork_guard = _thread.allocate_lock()


def _name_args(platform: str, credential_type: str) -> dict[str, Any]:
    args: dict[str, Any] = {"platform": platform}
    if credential_type != DEFAULT_TYPE:
        args["credential_type"] = credential_type
    return args


def expiry_policy(explicit: str | None) -> str:
    """The caller's choice, else ``$CREDENTIAL_AGENT_ON_EXPIRED``, else ``warn``."""
    policy = explicit or os.environ.get(ON_EXPIRED_ENV) or "warn"
    if policy not in ON_EXPIRED:
        raise ValueError(f"on_expired must be one of {', '.join(ON_EXPIRED)}, got {policy!r}")
    return policy


def get_args(platform: str, credential_type: str, policy: str) -> dict[str, Any]:
    args = _name_args(platform, credential_type)
    if policy != "ignore":
        args["expiry"] = True
    return args


def name_pair(name: str | tuple[str, str]) -> tuple[str, str]:
    return (name, DEFAULT_TYPE) if isinstance(name, str) else name


# 9999-12-31 23:59:59 UTC: an expiry past it (or NaN, inf, not a number) is no date
# at all, which a well-behaved agent never stores; such a credential counts as
# expired on an unknown date rather than crashing the caller's strftime.
_LAST_DATE = 253402300799.0


def expired_on(expires: Any) -> str | None:
    """None if ``expires`` (an ``expires_at`` from the agent) is absent or ahead, else
    the local date it passed, or ``"an unknown date"`` for a value no calendar shows."""
    if expires is None:
        return None
    if type(expires) not in (int, float) or not -_LAST_DATE <= expires <= _LAST_DATE:  # NaN fails both
        return "an unknown date"
    if expires > time.time():
        return None
    try:
        return time.strftime("%Y-%m-%d %H:%M", time.localtime(expires))
    except (OverflowError, OSError, ValueError):  # a year the platform's C library cannot show
        return "an unknown date"


def unwrap_get(result: Any, platform: str, credential_type: str, policy: str, warned: set[tuple[str, str]]) -> str:
    """The value from a `get` reply, applying the expiry policy."""
    if isinstance(result, str):  # policy "ignore", or an agent that predates expiry
        return result
    value: str = result["value"]
    when = expired_on(result.get("expires_at"))
    if when is not None:
        if policy == "refuse":
            raise errors.Expired(f"{platform}/{credential_type} expired on {when}; store a new one with `agent set`")
        if (platform, credential_type) not in warned:  # once per client, not once per call
            warned.add((platform, credential_type))
            import logging  # only here: most processes never need it

            logging.getLogger("client").warning(
                "credential %s/%s expired on %s; store a new one with `agent set`", platform, credential_type, when
            )
    return value


def field_name(credential_type: str) -> str:
    """``api-key`` -> ``api_key``: credential types as Python keyword-friendly keys."""
    return credential_type.replace("-", "_")


def credentials_of(platform: str, entries: list[dict[str, Any]]) -> list[str]:
    types = [e["credential_type"] for e in entries if e["platform"] == platform]
    if not types:
        raise errors.NotFound(f"no credentials for {platform}; store one with `agent set {platform}`")
    return types


def write_args(
    platform: str,
    value: str,
    credential_type: str,
    metadata: Mapping[str, Any] | None,
    validate: bool,
    expires_at: float | None,
) -> dict[str, Any]:
    args = _name_args(platform, credential_type)
    args["value"] = value
    if metadata is not None:
        args["metadata"] = dict(metadata)
    if not validate:
        args["validate"] = False
    if expires_at is not None:
        args["expires_at"] = expires_at
    return args


class ListPages:
    """The paging of `list`, shared by both clients: ask for pages until a short one.

    An agent that predates paging ignores offset/limit and sends everything at once
    (a page longer than asked for, or the same page again): both end the listing.
    Pages are cut by name order, so an entry seen twice (one added before it between
    two pages) is skipped rather than listed twice."""

    __slots__ = ("_last", "_offset", "done", "entries")

    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []
        self.done = False
        self._offset = 0
        self._last: tuple[str, str] | None = None

    def next_args(self) -> dict[str, int] | None:
        return None if self.done else {"offset": self._offset, "limit": protocol.LIST_PAGE}

    def add(self, page: list[dict[str, Any]]) -> None:
        self._offset += len(page)
        if len(page) != protocol.LIST_PAGE:  # the last page, or a whole listing from an older agent
            self.done = True
        if self._last is not None and len(page) > protocol.LIST_PAGE:
            self.entries.clear()  # an older agent's whole listing: it replaces the pages
            self._last = None
        last = self._last
        new = [e for e in page if last is None or (e["platform"], e["credential_type"]) > last]
        if not new:
            self.done = True
            return
        self.entries.extend(new)
        self._last = (new[-1]["platform"], new[-1]["credential_type"])


class Client:
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
        self.on_expired = expiry_policy(on_expired)
        self._warned: set[tuple[str, str]] = set()
        self._sock: _socket.socket | None = None
        self._buf = protocol.FrameBuffer()
        self._lock = _thread.allocate_lock()
        self._pid = _getpid()  # the process the connection and the lock belong to

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
        if self._pid != _getpid():
            self._after_fork()
        with self._lock:
            self._drop()

    def _after_fork(self) -> None:
        """In a child of the process that made this client: forget the parent's
        connection (closing only this process's copy of the descriptor, so the
        parent's connection stays up) and its lock (a parent thread may have held it)."""
        with _fork_guard:
            if self._pid == _getpid():  # another thread of this process was first
                return
            sock, self._sock = self._sock, None
            if sock is not None:
                sock.close()  # close(2) only: no shutdown, which would cut the parent off
            self._buf = protocol.FrameBuffer()
            self._lock = _thread.allocate_lock()
            self._pid = _getpid()

    def _drop(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._buf = protocol.FrameBuffer()

    def _try_connect(self) -> _socket.socket:
        paths.check_socket(self._path)
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except BaseException:
            sock.close()
            raise
        return sock

    def _connect_or_start(self) -> _socket.socket:
        try:
            return self._try_connect()
        except (FileNotFoundError, ConnectionRefusedError):
            if not _autostart.enabled(self._autostart):
                raise errors.AgentUnavailable(_autostart.unavailable_message(self._path)) from None
        if not _autostart.start_agent(max(self.timeout, 10.0)):
            raise errors.AgentUnavailable(f"could not start a credential agent at {self._path}")
        try:
            return self._try_connect()
        except (FileNotFoundError, ConnectionRefusedError) as e:
            raise errors.AgentUnavailable(f"no credential agent at {self._path}") from e

    def _connect(self) -> _socket.socket:
        try:
            return self._connect_or_start()
        except errors.AgentError:
            raise
        except OSError as e:  # e.g. a path too long for a Unix socket, a permission problem
            raise errors.AgentUnavailable(f"cannot connect to {self._path}: {e.strerror or e}") from None

    def _read_body(self, sock: _socket.socket) -> bytes:
        buf = self._buf
        while True:
            body = buf.next_body()
            if body is not None:
                return body
            chunk = sock.recv(_RECV)
            if not chunk:
                raise ConnectionResetError("the agent closed the connection")
            buf.feed(chunk)

    def _exchange(self, frames: bytes, count: int, ops: Iterable[str], timeout: float) -> list[bytes]:
        """Send ``frames`` and read ``count`` replies. On a connection that fails
        before any reply arrives, resend once on a new one if ``retry_allowed``.
        Any other way out of an unfinished exchange drops the connection."""
        for attempt in (0, 1):
            if self._sock is None:
                self._sock = self._connect()
            sock = self._sock
            bodies: list[bytes] = []
            sent = False
            try:
                if timeout != self.timeout:
                    sock.settimeout(timeout)
                sock.sendall(frames)
                sent = True
                read = self._read_body
                while len(bodies) < count:
                    bodies.append(read(sock))
                if timeout != self.timeout:
                    sock.settimeout(self.timeout)
                return bodies
            except TimeoutError:
                self._drop()
                raise errors.AgentTimeout(f"the credential agent did not answer within {timeout:g} s") from None
            except OSError as e:
                self._drop()
                if bodies or attempt or not protocol.retry_allowed(ops, sent):
                    raise errors.AgentUnavailable(f"lost the connection to the agent: {e.strerror or e}") from None
            except errors.BadRequest:
                self._drop()
                raise errors.ProtocolError("the agent sent an oversized or empty frame") from None
            except BaseException:  # KeyboardInterrupt, an exception from a signal handler
                self._drop()
                raise
        raise AssertionError("unreachable")

    def _timeout_for(self, op: str) -> float:
        return max(self.timeout, SLOW_TIMEOUT) if op in protocol.SLOW_OPS else self.timeout

    def call(self, op: str, args: Mapping[str, Any] | None = None) -> Any:
        """Send one request and return its result (or raise its error)."""
        frame = protocol.encode_request(op, args)
        if self._pid != _getpid():
            self._after_fork()
        with self._lock:
            (body,) = self._exchange(frame, 1, (op,), self._timeout_for(op))
        return protocol.decode_reply(body)

    def call_many(self, requests: Iterable[tuple[str, Mapping[str, Any]]]) -> list[Any]:
        """Pipeline requests: send them all, then read the replies in order.

        Returns each result, or the ``AgentError`` instance for a request that failed.
        """
        requests = list(requests)
        ops = [op for op, _ in requests]
        frames = [protocol.encode_request(op, args) for op, args in requests]
        timeout = max([self.timeout, *(self._timeout_for(op) for op in ops)])
        if self._pid != _getpid():
            self._after_fork()
        with self._lock:
            bodies = self._exchange(b"".join(frames), len(frames), ops, timeout)
        results: list[Any] = []
        for body in bodies:
            try:
                results.append(protocol.decode_reply(body))
            except errors.AgentError as e:
                results.append(e)
        return results

    # typed operations: one line each
    def hello(self) -> dict[str, Any]:
        result: dict[str, Any] = self.call("hello")
        return result

    def status(self) -> dict[str, Any]:
        result: dict[str, Any] = self.call("status")
        return result

    def stop(self) -> None:
        self.call("stop")

    def init(self, key_source: str | None = None, passphrase: str | None = None) -> dict[str, Any]:
        args = {k: v for k, v in (("key_source", key_source), ("passphrase", passphrase)) if v is not None}
        result: dict[str, Any] = self.call("init", args)
        return result

    def unlock(self, passphrase: str | None = None) -> None:
        self.call("unlock", {} if passphrase is None else {"passphrase": passphrase})

    def lock(self) -> None:
        self.call("lock")

    def store(
        self,
        platform: str,
        value: str,
        credential_type: str = DEFAULT_TYPE,
        metadata: Mapping[str, Any] | None = None,
        *,
        validate: bool = True,
        expires_at: float | None = None,
    ) -> None:
        self.call("store", write_args(platform, value, credential_type, metadata, validate, expires_at))

    def update(
        self,
        platform: str,
        value: str,
        credential_type: str = DEFAULT_TYPE,
        metadata: Mapping[str, Any] | None = None,
        *,
        validate: bool = True,
        expires_at: float | None = None,
    ) -> None:
        self.call("update", write_args(platform, value, credential_type, metadata, validate, expires_at))

    def get(self, platform: str, credential_type: str = DEFAULT_TYPE) -> str:
        result = self.call("get", get_args(platform, credential_type, self.on_expired))
        return unwrap_get(result, platform, credential_type, self.on_expired, self._warned)

    def get_many(self, names: Iterable[str | tuple[str, str]]) -> list[str]:
        """Fetch several credentials in one pipelined round trip; raises the first error."""
        pairs = [name_pair(n) for n in names]
        results = self.call_many([("get", get_args(p, t, self.on_expired)) for p, t in pairs])
        for r in results:
            if isinstance(r, errors.AgentError):
                raise r
        return [unwrap_get(r, p, t, self.on_expired, self._warned) for r, (p, t) in zip(results, pairs, strict=True)]

    def credentials_for(self, platform: str) -> dict[str, str]:
        """Every credential of ``platform`` keyed by type: ``{"api_key": ...}`` (two round trips)."""
        types = credentials_of(platform, self.list())
        values = self.get_many([(platform, t) for t in types])
        return {field_name(t): v for t, v in zip(types, values, strict=True)}

    def delete(self, platform: str, credential_type: str = DEFAULT_TYPE) -> None:
        self.call("delete", _name_args(platform, credential_type))

    def list(self) -> list[dict[str, Any]]:
        """Every credential's entry, fetched ``protocol.LIST_PAGE`` at a time (a whole
        listing of large metadata does not fit one frame)."""
        pages = ListPages()
        while (args := pages.next_args()) is not None:
            pages.add(self.call("list", args))
        return pages.entries

    def metadata(self, platform: str, credential_type: str = DEFAULT_TYPE) -> dict[str, Any]:
        result: dict[str, Any] = self.call("metadata", _name_args(platform, credential_type))
        return result

    def validate(self, platform: str, value: str) -> bool:
        return bool(self.call("validate", {"platform": platform, "value": value})["valid"])
