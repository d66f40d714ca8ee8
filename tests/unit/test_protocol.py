"""Pure protocol tests: no sockets, no agent (h11 style)."""

from __future__ import annotations

import msgpack
import pytest

from client import errors, protocol


def frame(obj: object) -> bytes:
    body = msgpack.packb(obj, use_bin_type=True)
    return len(body).to_bytes(4, "big") + body


def body_of(data: bytes) -> bytes:
    buf = protocol.FrameBuffer()
    buf.feed(data)
    body = buf.next_body()
    assert body is not None
    return body


def test_version_constant_is_a_plain_integer_one() -> None:
    # bump only for an incompatible change, and update this test with a note why
    assert protocol.PROTOCOL_VERSION == 1
    assert type(protocol.PROTOCOL_VERSION) is int
    assert protocol.MAX_FRAME == 256 * 1024


def test_request_round_trip() -> None:
    data = protocol.encode_request("get", {"platform": "runpod"})
    req = protocol.decode_request(body_of(data))
    assert req.op == "get"
    assert dict(req.args) == {"platform": "runpod"}


def test_reply_round_trips() -> None:
    assert protocol.decode_reply(body_of(protocol.encode_ok({"a": [1, 2]}))) == {"a": [1, 2]}
    with pytest.raises(errors.Locked) as info:
        protocol.decode_reply(body_of(protocol.encode_error(errors.Locked())))
    assert "agent unlock" in info.value.message


@pytest.mark.parametrize("cls", list(errors.CODES.values()))
def test_every_error_code_round_trips_to_its_class(cls: type[errors.AgentError]) -> None:
    with pytest.raises(cls) as info:
        protocol.decode_reply(body_of(protocol.encode_error(cls("msg"))))
    assert type(info.value) is cls
    assert info.value.message == "msg"


def test_unknown_error_code_keeps_its_code() -> None:
    reply = frame({"v": 1, "ok": False, "error": {"code": "from_the_future", "message": "m"}})
    with pytest.raises(errors.AgentError) as info:
        protocol.decode_reply(body_of(reply))
    assert info.value.code == "from_the_future"


def test_unknown_keys_are_ignored() -> None:
    req = protocol.decode_request(body_of(frame(
        {"v": 1, "op": "get", "args": {"platform": "x", "future_arg": 1}, "id": 7, "extra": True})))
    assert dict(req.args) == {"platform": "x"}
    assert protocol.decode_reply(body_of(frame({"v": 1, "ok": True, "result": 3, "new": "x"}))) == 3


def test_frames_split_and_joined() -> None:
    data = protocol.encode_request("hello") + protocol.encode_request("status")
    buf = protocol.FrameBuffer()
    bodies = []
    for i in range(len(data)):  # one byte at a time
        buf.feed(data[i:i + 1])
        while (b := buf.next_body()) is not None:
            bodies.append(b)
    assert [protocol.decode_request(b).op for b in bodies] == ["hello", "status"]
    assert len(buf) == 0


@pytest.mark.parametrize("length", [0, protocol.MAX_FRAME + 1, 2**32 - 1])
def test_bad_lengths_are_refused_before_the_body(length: int) -> None:
    buf = protocol.FrameBuffer()
    buf.feed(length.to_bytes(4, "big"))
    with pytest.raises(errors.BadRequest):
        buf.next_body()


def test_limit_frame_is_accepted() -> None:
    buf = protocol.FrameBuffer()
    buf.feed(protocol.MAX_FRAME.to_bytes(4, "big") + b"\x00" * protocol.MAX_FRAME)
    assert len(buf.next_body() or b"") == protocol.MAX_FRAME


def test_truncated_frame_waits_for_more() -> None:
    data = protocol.encode_request("hello")
    buf = protocol.FrameBuffer()
    buf.feed(data[:-1])
    assert buf.next_body() is None
    buf.feed(data[-1:])
    assert buf.next_body() is not None


@pytest.mark.parametrize(
    ("body", "cls"),
    [
        (b"\xc1", errors.BadRequest),  # never-used msgpack byte
        (b"\x81\xa1", errors.BadRequest),  # truncated map
        (msgpack.packb([1, 2]), errors.BadRequest),  # not a map
        (msgpack.packb({1: 2}), errors.BadRequest),  # non-string key
        (b"\x81\xa1v\xa2\xff\xfe", errors.BadRequest),  # invalid UTF-8
        (b"\x91" * 5000, errors.BadRequest),  # deeply nested
        (msgpack.packb({"op": "hello"}), errors.BadRequest),  # no version
        (msgpack.packb({"v": "1", "op": "hello"}), errors.BadRequest),
        (msgpack.packb({"v": True, "op": "hello"}), errors.BadRequest),
        (msgpack.packb({"v": 2, "op": "hello"}), errors.UnsupportedVersion),
        (msgpack.packb({"v": 1}), errors.BadRequest),
        (msgpack.packb({"v": 1, "op": 5}), errors.BadRequest),
        (msgpack.packb({"v": 1, "op": "launch"}), errors.UnknownOp),
        (msgpack.packb({"v": 1, "op": "get", "args": []}), errors.BadRequest),
        (msgpack.packb({"v": 1, "op": "get", "args": {}}), errors.BadRequest),
        (msgpack.packb({"v": 1, "op": "get", "args": {"platform": 5}}), errors.BadRequest),
        (msgpack.packb({"v": 1, "op": "store", "args": {"platform": "a", "value": b"x"}}, use_bin_type=True),
         errors.BadRequest),
        (msgpack.packb({"v": 1, "op": "store", "args": {"platform": "a", "value": "x", "validate": 1}}),
         errors.BadRequest),
        (msgpack.packb({"v": 1, "op": "store", "args": {"platform": "a", "value": "x", "expires_at": True}}),
         errors.BadRequest),
        (msgpack.packb({"v": 1, "op": "store", "args": {"platform": "a", "value": "x", "metadata": {1: 2}}},
                       strict_types=False), errors.BadRequest),
        (msgpack.packb({"v": 1, "op": "hello"}) + b"\x00", errors.BadRequest),  # trailing bytes
    ],
)
def test_malformed_requests_raise_typed_errors(body: bytes, cls: type[errors.AgentError]) -> None:
    with pytest.raises(cls):
        protocol.decode_request(body)


def test_error_messages_never_echo_the_request() -> None:
    secret = "hf_CANARYcanaryCANARY123456"
    for body in (
        msgpack.packb({"v": 1, "op": secret}),
        msgpack.packb({"v": 1, "op": "get", "args": {"platform": {"x": secret}}}),
        msgpack.packb({"v": secret, "op": "get"}),
        secret.encode(),
    ):
        with pytest.raises(errors.AgentError) as info:
            protocol.decode_request(body)
        assert secret not in str(info.value)


def test_request_repr_hides_arguments() -> None:
    req = protocol.decode_request(body_of(protocol.encode_request("store", {"platform": "a", "value": "SECRETv"})))
    assert "SECRETv" not in repr(req)


def test_oversized_message_cannot_be_encoded() -> None:
    with pytest.raises(errors.BadRequest):
        protocol.encode_request("store", {"platform": "a", "value": "x" * protocol.MAX_FRAME})


def test_ops_table_names_only_known_types() -> None:
    for op, specs in protocol.OPS.items():
        assert op.isidentifier()
        for spec in specs:
            assert spec.types, (op, spec.name)


def test_unencodable_values_are_a_typed_error() -> None:
    with pytest.raises(errors.BadRequest):
        protocol.encode_request("store", {"platform": "a", "value": "\ud800"})
    with pytest.raises(errors.BadRequest):
        protocol.encode_request("store", {"platform": "a", "value": object()})


@pytest.mark.parametrize("args", [None, {}, {"platform": "hf"}, {"platform": "x", "credential_type": "t"},
                                  {"platform": "p", "value": "v" * 300, "metadata": {"k": [1, 2.5, None]}}])
@pytest.mark.parametrize("op", ["get", "store", "hello", "not-an-op"])
def test_encoded_requests_equal_packing_the_whole_map(op: str, args: dict[str, object] | None) -> None:
    # the request heads are packed once; the bytes must be what packing the map gives
    assert protocol.encode_request(op, args) == frame({"v": 1, "op": op, "args": dict(args or {})})


@pytest.mark.parametrize("result", [None, "hf_" + "x" * 37, {"a": [1, True]}, list(range(40)), 1.5, "é" * 100])
def test_encoded_ok_replies_equal_packing_the_whole_map(result: object) -> None:
    assert protocol.encode_ok(result) == frame({"v": 1, "ok": True, "result": result})


def test_frame_buffer_copies_a_reused_receive_buffer() -> None:
    data = bytearray(protocol.encode_request("hello"))
    buf = protocol.FrameBuffer()
    buf.feed(data[:3])
    buf.feed(memoryview(data)[3:])
    data[:] = b"\x00" * len(data)  # the caller reuses its buffer
    assert protocol.decode_request(buf.next_body() or b"").op == "hello"
