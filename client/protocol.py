"""The wire protocol: framing, encoding and checking messages.

Rules of this module:
- no I/O: it never imports socket or asyncio; transports feed it bytes and send
  what it returns (the h11 way);
- what may be said (the ops, their arguments, the limits) is ``client.vocabulary``'s;
  this module re-exports it, so ``protocol.OPS`` is that table;
- changes are additive (unknown keys are ignored); only an incompatible change
  bumps ``PROTOCOL_VERSION``.

A frame is a 4-byte unsigned big-endian length N, then N bytes of one msgpack map.
Request: ``{"v": 1, "op": "get", "args": {...}}``.
Reply: ``{"v": 1, "ok": true, "result": ...}`` or
``{"v": 1, "ok": false, "error": {"code": "locked", "message": "..."}}``.
"""

from __future__ import annotations

import _thread
import struct

import msgpack

from client import errors
from client.vocabulary import (
    DEFAULT_TYPE,
    KEY_SOURCES,
    LIST_PAGE,
    MAX_EXPIRES,
    MAX_FRAME,
    MAX_NAME,
    MAX_TOKEN,
    MAX_VALUE,
    OPS,
    RETRY_SAFE,
    SLOW_OPS,
    UNLOCKS,
    Arg,
    retry_allowed,
)

# ``import client`` is paid by every process that wants one key: typing, dataclasses
# and collections would weigh more than the interpreter's own start (the import rows
# of benchmarks/run.py).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any, Final

__all__ = [
    "PROTOCOL_VERSION",
    "MAX_FRAME",
    "HEADER",
    "DEFAULT_TYPE",
    "KEY_SOURCES",
    "MAX_EXPIRES",
    "MAX_TOKEN",
    "MAX_NAME",
    "MAX_VALUE",
    "Arg",
    "OPS",
    "Request",
    "RETRY_SAFE",
    "SLOW_OPS",
    "UNLOCKS",
    "LIST_PAGE",
    "retry_allowed",
    "FrameBuffer",
    "encode_frame",
    "encode_request",
    "encode_ok",
    "encode_error",
    "decode_request",
    "decode_reply",
]

PROTOCOL_VERSION: Final = 1
HEADER: Final = 4
_LENGTH = struct.Struct(">I")


class Request:
    """One checked request. Read-only by convention (built only by ``decode_request``)."""

    __slots__ = ("args", "op")

    def __init__(self, op: str, args: Mapping[str, Any]) -> None:
        self.op = op
        self.args = args

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Request) and (self.op, self.args) == (other.op, other.args)

    def __repr__(self) -> str:
        # never show argument values: they may be secrets
        return f"Request(op={self.op!r}, args=<{len(self.args)} args>)"


class FrameBuffer:
    """Accumulates received bytes and cuts them into frame bodies.

    ``next_body`` raises ``BadRequest`` for a zero or oversized length as soon as
    the 4-byte header is in: the body is never buffered (as ssh-agent).

    The common case, whole frames per read, costs no copy but the body slice:
    the received ``bytes`` are kept as they are and read from an offset; only a
    frame split across reads is gathered in a ``bytearray``.
    """

    __slots__ = ("_buf", "_limit", "_pos")

    def __init__(self, limit: int = MAX_FRAME) -> None:
        self._buf: bytes | bytearray = b""
        self._pos = 0
        self._limit = limit

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        buf, pos = self._buf, self._pos
        if pos == len(buf):  # everything before was consumed
            # bytes are immutable, so kept as they are; a caller's buffer is copied
            self._buf = data if type(data) is bytes else bytes(data)
            self._pos = 0
            return
        if isinstance(buf, bytes):
            buf = bytearray(memoryview(buf)[pos:])
        elif pos:
            del buf[:pos]
        buf += data
        self._buf, self._pos = buf, 0

    def __len__(self) -> int:
        return len(self._buf) - self._pos

    def next_body(self) -> bytes | None:
        buf, pos = self._buf, self._pos
        if len(buf) - pos < HEADER:
            return None
        (n,) = _LENGTH.unpack_from(buf, pos)
        if n == 0:
            raise errors.BadRequest("empty frame")
        if n > self._limit:
            raise errors.BadRequest(f"frame of {n} bytes exceeds the {self._limit}-byte limit")
        start = pos + HEADER
        end = start + n
        if len(buf) < end:
            return None
        body = buf[start:end]
        if end == len(buf):
            # all consumed: let go of the received bytes now, not at the next read (a
            # connection that goes quiet would keep its last frame, a value or a
            # passphrase, for as long as it stays open)
            self._buf, self._pos = b"", 0
        else:
            self._pos = end
        return body if type(body) is bytes else bytes(body)


# One packer for the process: msgpack.packb builds a Packer, and with it a
# 1 MiB buffer, per call. The lock keeps it correct across threads (packing a
# dict subclass can run Python code, and so switch threads mid-pack).
_packer = msgpack.Packer(use_bin_type=True)
_pack_lock = _thread.allocate_lock()


def _pack(message: Any) -> bytes:
    try:
        with _pack_lock:
            body: bytes = _packer.pack(message)  # the packer resets itself after an error
    except UnicodeEncodeError:
        raise errors.BadRequest("the message holds text that is not valid Unicode (a lone surrogate)") from None
    except (TypeError, ValueError, OverflowError) as e:
        raise errors.BadRequest(f"the message holds a value msgpack cannot encode ({type(e).__name__})") from None
    return body


def _frame(body: bytes) -> bytes:
    if len(body) > MAX_FRAME:
        raise errors.BadRequest(f"message of {len(body)} bytes exceeds the {MAX_FRAME}-byte limit")
    return _LENGTH.pack(len(body)) + body


def encode_frame(message: Mapping[str, Any]) -> bytes:
    return _frame(_pack(message))


def _request_head(op: str) -> bytes:
    """The bytes of ``{"v": 1, "op": op, "args": `` (a 3-entry map, in that order)."""
    return b"\x83" + _pack("v") + _pack(PROTOCOL_VERSION) + _pack("op") + _pack(op) + _pack("args")


# Known ops' request heads, packed once; the bytes equal packing the whole map. Both
# heads pay against packing the whole message, through the shared Packer or packb:
# benchmarks/protocol_encoding.py measures the three side by side.
_REQUEST_HEADS: Final = {op: _request_head(op) for op in OPS}
# ``{"v": 1, "ok": true, "result": `` likewise
_OK_HEAD: Final = b"\x83" + _pack("v") + _pack(PROTOCOL_VERSION) + _pack("ok") + _pack(True) + _pack("result")


def encode_request(op: str, args: Mapping[str, Any] | None = None) -> bytes:
    head = _REQUEST_HEADS.get(op) or _request_head(op)
    return _frame(head + _pack(args if type(args) is dict else dict(args or {})))


def fits_in_frame(result: Any) -> bool:
    """Whether ``result`` fits one reply frame (for ops that can trim what they return)."""
    return len(_OK_HEAD) + len(_pack(result)) <= MAX_FRAME


def encode_ok(result: Any) -> bytes:
    return _frame(_OK_HEAD + _pack(result))


def encode_error(err: errors.AgentError) -> bytes:
    error = {"code": err.code, "message": err.message}
    return encode_frame({"v": PROTOCOL_VERSION, "ok": False, "error": error})


def _unpack(body: bytes) -> Any:
    try:
        return msgpack.unpackb(body, raw=False, strict_map_key=True)
    except (ValueError, TypeError, msgpack.UnpackException) as e:
        # the message says what kind of problem, never the bytes
        raise errors.BadRequest(f"not a msgpack message ({type(e).__name__})") from None


def _type_names(types: tuple[type, ...]) -> str:
    names = {
        str: "string",
        bytes: "binary",
        bool: "boolean",
        int: "integer",
        float: "number",
        dict: "map",
        list: "array",
        type(None): "nil",
    }
    return " or ".join(names.get(t, t.__name__) for t in types)


def _check_arg(spec: Arg, value: Any) -> None:
    ok = isinstance(value, spec.types)
    if ok and isinstance(value, bool) and bool not in spec.types:
        ok = False  # bool is an int to Python, not to the protocol
    if not ok:
        raise errors.BadRequest(f"argument {spec.name!r} must be {_type_names(spec.types)}")
    if isinstance(value, dict) and not all(isinstance(k, str) for k in value):
        raise errors.BadRequest(f"argument {spec.name!r} must have string keys")


def decode_request(body: bytes) -> Request:
    """Parse and check one request body; raise the typed error a reply should carry."""
    msg = _unpack(body)
    if not isinstance(msg, dict):
        raise errors.BadRequest("a request must be a map")
    v = msg.get("v")
    if type(v) is not int:
        raise errors.BadRequest("field 'v' must be an integer")
    if v != PROTOCOL_VERSION:
        raise errors.UnsupportedVersion(f"protocol version {v} is not supported (this agent speaks {PROTOCOL_VERSION})")
    op = msg.get("op")
    if not isinstance(op, str):
        raise errors.BadRequest("field 'op' must be a string")
    specs = OPS.get(op)
    if specs is None:
        # the op name is not echoed: a confused caller may have put a secret there
        raise errors.UnknownOp("unknown operation; `hello` lists the supported ones")
    raw_args = msg.get("args", {})
    if not isinstance(raw_args, dict):
        raise errors.BadRequest("field 'args' must be a map")
    args: dict[str, Any] = {}
    for spec in specs:
        name = spec.name
        if name in raw_args:
            value = raw_args[name]
            if type(value) not in spec.exact:
                _check_arg(spec, value)
            args[name] = value
        elif spec.required:
            raise errors.BadRequest(f"missing argument {spec.name!r}")
    return Request(op, args)


def decode_reply(body: bytes) -> Any:
    """Return a reply's result, or raise the error it carries."""
    try:
        msg = _unpack(body)
    except errors.BadRequest:
        raise errors.ProtocolError("the agent sent a reply that is not msgpack") from None
    ok = msg.get("ok") if isinstance(msg, dict) else None
    if ok is True:
        return msg.get("result")
    if ok is not False:
        raise errors.ProtocolError()
    err = msg.get("error")
    if not isinstance(err, dict):
        raise errors.ProtocolError()
    raise errors.from_wire(err.get("code"), err.get("message"))
