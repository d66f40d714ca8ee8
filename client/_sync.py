"""The blocking client: a thin transport over ``client.protocol``.

Thread-safe (one lock around each exchange), connects lazily, reconnects once after
a dropped connection, and raises the typed errors of ``client.errors``.
"""

from __future__ import annotations

import _socket
import _thread
import os
import time

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

DEFAULT_TIMEOUT = 10.0
_RECV = 65536
# What `get` does with a credential past its expiry: log a warning and return it
# (default), raise `Expired`, or not ask the agent about expiry at all.
ON_EXPIRED = ("warn", "refuse", "ignore")
ON_EXPIRED_ENV = "CREDENTIAL_AGENT_ON_EXPIRED"


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


def unwrap_get(result: Any, platform: str, credential_type: str, policy: str, warned: set[tuple[str, str]]) -> str:
    """The value from a `get` reply, applying the expiry policy."""
    if isinstance(result, str):  # policy "ignore", or an agent that predates expiry
        return result
    value: str = result["value"]
    expires = result.get("expires_at")
    if expires is not None and expires <= time.time():
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(expires))
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

    def _exchange(self, frames: bytes, count: int) -> list[bytes]:
        """Send ``frames`` and read ``count`` replies, reconnecting once if the
        connection dropped before any reply arrived."""
        for attempt in (0, 1):
            if self._sock is None:
                self._sock = self._connect()
            sock = self._sock
            bodies: list[bytes] = []
            try:
                sock.sendall(frames)
                read = self._read_body
                while len(bodies) < count:
                    bodies.append(read(sock))
                return bodies
            except TimeoutError:
                self._drop()
                raise errors.AgentTimeout(
                    f"the credential agent did not answer within {self.timeout:g} s"
                ) from None
            except OSError as e:
                self._drop()
                if bodies or attempt:
                    raise errors.AgentUnavailable(f"lost the connection to the agent: {e.strerror or e}") from None
            except errors.BadRequest:
                self._drop()
                raise errors.ProtocolError("the agent sent an oversized or empty frame") from None
        raise AssertionError("unreachable")

    def call(self, op: str, args: Mapping[str, Any] | None = None) -> Any:
        """Send one request and return its result (or raise its error)."""
        frame = protocol.encode_request(op, args)
        with self._lock:
            (body,) = self._exchange(frame, 1)
        return protocol.decode_reply(body)

    def call_many(self, requests: Iterable[tuple[str, Mapping[str, Any]]]) -> list[Any]:
        """Pipeline requests: send them all, then read the replies in order.

        Returns each result, or the ``AgentError`` instance for a request that failed.
        """
        frames = [protocol.encode_request(op, args) for op, args in requests]
        with self._lock:
            bodies = self._exchange(b"".join(frames), len(frames))
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
        result: list[dict[str, Any]] = self.call("list")
        return result

    def metadata(self, platform: str, credential_type: str = DEFAULT_TYPE) -> dict[str, Any]:
        result: dict[str, Any] = self.call("metadata", _name_args(platform, credential_type))
        return result

    def validate(self, platform: str, value: str) -> bool:
        return bool(self.call("validate", {"platform": platform, "value": value})["valid"])
