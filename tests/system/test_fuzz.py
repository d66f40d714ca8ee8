"""Bad input against a live agent: hypothesis-generated and mutated frames.

Every frame gets a well-formed reply (a typed error for bad input, never
``internal``) or, after a length the stream cannot recover from, an error and a
closed connection; between batches a valid request on another connection is
still served. The run is bounded in time (``CA_FUZZ_SECONDS``, default 20) and
prints how many cases it sent.
"""

from __future__ import annotations

import json
import os
import random
import socket
import time
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, Phase, assume, given, settings
from hypothesis import strategies as st

from client import errors, protocol
from support import AgentProcess

BUDGET = float(os.environ.get("CA_FUZZ_SECONDS", "12"))
BATCH = 100
MUTANTS = 7  # byte-level mutants sent after each generated case: cheap extra cases
BYSTANDER = "bystander-value-0123456789"
# ops fuzzed only with broken args: valid ones would end the run (stop, lock), or
# re-wrap the key and pay scrypt plus the growing wrong-passphrase delay (rotate_key,
# rekey, recovery_code and recover: a random passphrase or code is a wrong one)
_DISRUPTIVE = frozenset({"stop", "lock", "rotate_key", "rekey", "recovery_code", "recover"})
_EDGES = (0, 1, protocol.MAX_FRAME, protocol.MAX_FRAME + 1, 2**32 - 1)


# --- what the agent owes for a byte string -------------------------------------------
def owed(data: bytes) -> tuple[int, bool]:
    """(replies due, whether a bad length ends the stream) for ``data`` sent then EOF."""
    fb = protocol.FrameBuffer()
    fb.feed(data)
    n = 0
    while True:
        try:
            body = fb.next_body()
        except errors.BadRequest:
            return n + 1, True
        if body is None:
            return n, False
        n += 1


def frames_in(data: bytes) -> list[bytes]:
    fb = protocol.FrameBuffer()
    fb.feed(data)
    out = []
    while True:
        try:
            body = fb.next_body()
        except errors.BadRequest:
            return out
        if body is None:
            return out
        out.append(body)


def exchange(path: Path, data: bytes, timeout: float = 20.0) -> bytes:
    """Send ``data``, half-close, read everything until the agent closes."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(str(path))
    received = bytearray()
    try:
        try:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the agent closed after a bad length while we were still sending
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            received += chunk
    finally:
        s.close()
    return bytes(received)


def check_replies(data: bytes, received: bytes) -> None:
    due, bad_length = owed(data)
    fb = protocol.FrameBuffer()
    fb.feed(received)
    replies = []
    while (body := fb.next_body()) is not None:
        replies.append(msgpack.unpackb(body, raw=False))
    assert len(fb) == 0, "trailing bytes after the last reply"
    assert len(replies) == due, f"{due} replies due, {len(replies)} received"
    for r in replies:
        assert isinstance(r, dict) and r.get("v") == protocol.PROTOCOL_VERSION and isinstance(r.get("ok"), bool), r
        if not r["ok"]:
            err = r["error"]
            assert err["code"] in errors.CODES, err
            assert err["code"] != "internal", f"bad input made an internal error: {err}"
            assert isinstance(err["message"], str) and 0 < len(err["message"]) < 400
    if bad_length:
        assert replies[-1]["ok"] is False and replies[-1]["error"]["code"] == "bad_request"


# --- strategies ------------------------------------------------------------------------
NAMES = st.sampled_from(["fuzz", "huggingface", "wandb", "runpod", "hf", "x", "a" * 64, "a" * 65, ""]) | st.text(
    max_size=80
)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=40)
    | st.binary(max_size=40)
    | st.builds(msgpack.ExtType, st.integers(0, 127), st.binary(max_size=8))
)
ANY = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=16,
)


def accepts(spec: protocol.Arg, value: Any) -> bool:
    if isinstance(value, bool):
        return bool in spec.types
    return isinstance(value, spec.types) and not (
        isinstance(value, dict) and not all(isinstance(k, str) for k in value)
    )


def valid_value(spec: protocol.Arg) -> st.SearchStrategy[Any]:
    if spec.name in ("platform", "credential_type"):
        return NAMES
    if spec.types == (str,):
        return st.text(max_size=120) | st.sampled_from(["hf_" + "a" * 30, "k" * 40, "é" * 20])
    if spec.types == (bytes,):  # a decrypt token: random bytes, or the shape of a real one
        return st.binary(max_size=200) | st.sampled_from([b"gAAAAA" + b"A" * 94])
    if dict in spec.types:
        return st.none() | st.dictionaries(st.text(max_size=10), ANY, max_size=5)
    if bool in spec.types:
        return st.booleans()
    return st.none() | st.integers(-(2**63), 2**64 - 1) | st.floats()


@st.composite
def request_maps(draw: st.DrawFn) -> dict[Any, Any]:
    kind = draw(st.sampled_from(["valid", "wrong_type", "wrong_type", "missing", "unknown_op", "version", "fields"]))
    ops = sorted(protocol.OPS) if kind in ("wrong_type", "missing") else sorted(set(protocol.OPS) - _DISRUPTIVE)
    op = draw(st.sampled_from(ops))
    specs = protocol.OPS[op]
    if op in _DISRUPTIVE and not specs:
        kind = "fields"
    args: dict[Any, Any] = {}
    for spec in specs:
        if spec.required or draw(st.booleans()):
            args[spec.name] = draw(valid_value(spec))
    if draw(st.booleans()):
        args[draw(st.text(max_size=8))] = draw(ANY)  # unknown keys are ignored
    msg: dict[Any, Any] = {"v": protocol.PROTOCOL_VERSION, "op": op, "args": args}
    if kind == "wrong_type" and specs:
        spec = draw(st.sampled_from(specs))
        args[spec.name] = draw(ANY.filter(lambda v: not accepts(spec, v)))
    elif kind == "missing" and any(s.required for s in specs):
        del args[draw(st.sampled_from([s.name for s in specs if s.required]))]
    elif kind == "unknown_op":
        msg["op"] = draw(st.text(max_size=30).filter(lambda s: s not in protocol.OPS) | ANY)
    elif kind == "version":
        msg["v"] = draw(st.integers(-(2**63), 2**64 - 1).filter(lambda v: v != 1) | ANY)
    elif kind == "fields" or (kind == "wrong_type" and not specs):
        field = draw(st.sampled_from(["v", "op", "args"]))
        if draw(st.booleans()):
            del msg[field]
        else:
            msg[field] = draw(ANY.filter(lambda v: not isinstance(v, dict)) if field == "args" else ANY)
    return msg


def frame(body: bytes) -> bytes:
    return len(body).to_bytes(4, "big") + body


def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


@st.composite
def invalid_utf8(draw: st.DrawFn) -> bytes:
    """A request whose op, platform or value is a msgpack str holding invalid UTF-8."""
    bad = draw(st.sampled_from([b"\xff\xfe", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\x80"]))
    where = draw(st.sampled_from(["op", "platform", "value", "key"]))
    marker = "\x01" * len(bad)
    args = {"platform": marker if where == "platform" else "fuzz", "value": marker if where == "value" else "v"}
    if where == "key":
        args[marker] = 1
    msg = {"v": 1, "op": marker if where == "op" else "store", "args": args}
    return pack(msg).replace(pack(marker), pack(marker)[: -len(bad)] + bad)


@st.composite
def deep(draw: st.DrawFn) -> bytes:
    """A store whose metadata nests ``depth`` arrays or maps (raw bytes: deeper than msgpack packs)."""
    depth = draw(st.sampled_from([1, 16, 17, 100, 500, 1000, 1020, 1030, 5000]) | st.integers(1, 3000))
    opener = b"\x91" if draw(st.booleans()) else b"\x81" + pack("k")
    head = b"\x83" + pack("v") + pack(1) + pack("op") + pack("store") + pack("args")
    args = b"\x83" + pack("platform") + pack("fuzz") + pack("value") + pack("v") + pack("metadata")
    return head + args + b"\x81" + pack("m") + opener * depth + pack(1)


@st.composite
def huge(draw: st.DrawFn) -> bytes:
    size = draw(st.sampled_from([protocol.MAX_VALUE, protocol.MAX_VALUE + 1, 200_000, protocol.MAX_FRAME - 60]))
    field = draw(st.sampled_from(["platform", "value", "op", "meta"]))
    text = "h" * size
    op = draw(st.sampled_from(["store", "update", "validate", "get"]))
    args: dict[str, Any] = {"platform": text if field == "platform" else "fuzz", "value": "v"}
    if field == "value":
        args["value"] = text
    if field == "meta":
        args["metadata"] = {"note": text}
    return pack({"v": 1, "op": text if field == "op" else op, "args": args})


@st.composite
def units(draw: st.DrawFn) -> bytes:
    """One piece of a write: usually a whole frame, sometimes raw or broken bytes."""
    kind = draw(
        st.sampled_from(
            ["request"] * 6 + ["non_map", "random_body", "random_bytes", "truncated", "utf8", "deep", "huge", "edge"]
        )
    )
    if kind == "request":
        return frame(pack(draw(request_maps())))
    if kind == "non_map":
        return frame(pack(draw(ANY.filter(lambda v: not isinstance(v, dict)))))
    if kind == "random_body":
        return frame(draw(st.binary(min_size=1, max_size=64)))
    if kind == "random_bytes":
        return draw(st.binary(max_size=64))
    if kind == "truncated":
        whole = frame(pack(draw(request_maps())))
        return whole[: draw(st.integers(0, len(whole) - 1))]
    if kind == "utf8":
        return frame(draw(invalid_utf8()))
    if kind == "deep":
        return frame(draw(deep()))
    if kind == "huge":
        return frame(draw(huge()))
    return edge_frame(draw(st.sampled_from(_EDGES)), draw(st.integers(0, 2**32)))


def edge_frame(length: int, seed: int) -> bytes:
    """A header of ``length`` and what follows it: a full body where the length is legal."""
    header = length.to_bytes(4, "big")
    rnd = random.Random(seed)
    if length == 0:
        return header
    if length <= protocol.MAX_FRAME:
        if length == 1:
            return header + rnd.randbytes(1)
        # a real request padded to exactly the limit
        base = pack({"v": 1, "op": "validate", "args": {"platform": "fuzz", "value": ""}})
        body = pack({"v": 1, "op": "validate", "args": {"platform": "fuzz", "value": "p" * (length - len(base) - 4)}})
        assert len(body) == length
        return header + body
    return header + rnd.randbytes(rnd.randrange(0, 64))


def payloads() -> st.SearchStrategy[bytes]:
    return st.lists(units(), min_size=1, max_size=5).map(b"".join)


def mutate(data: bytes, rnd: random.Random) -> bytes:
    """A cheap byte-level mutant of ``data`` (flip, cut, splice, re-length, repeat)."""
    buf = bytearray(data or b"\x00")
    how = rnd.randrange(6)
    if how == 0:
        for _ in range(rnd.randint(1, 4)):
            buf[rnd.randrange(len(buf))] = rnd.randrange(256)
    elif how == 1:
        del buf[rnd.randrange(len(buf)) :]
    elif how == 2:
        at = rnd.randrange(len(buf) + 1)
        buf[at:at] = rnd.randbytes(rnd.randint(1, 16))
    elif how == 3 and len(buf) >= 4:
        length = rnd.choice([*_EDGES, rnd.randrange(2**32), max(0, len(buf) - 4 + rnd.randint(-3, 3))])
        buf[:4] = length.to_bytes(4, "big")
    elif how == 4:
        at = rnd.randrange(len(buf))
        del buf[at : at + rnd.randint(1, 8)]
    else:
        buf = buf * rnd.randint(2, 4)
    return bytes(buf)


def disruptive(data: bytes) -> bool:
    for body in frames_in(data):
        try:
            req = protocol.decode_request(body)
        except errors.AgentError:
            continue
        if req.op in _DISRUPTIVE:
            return True
        if req.op == "unlock" and req.args.get("lock_after") is not None:  # the agent locks itself after it
            return True
    return False


WRONG = [None, True, 0, -1, 2**64 - 1, 1.5, float("nan"), "", "s" * 300, b"\xff\x00", [], ["x"], {}, {"k": "v"},
         {1: 2}, msgpack.ExtType(5, b"x")]


def wrong_type_frames() -> list[bytes]:
    """Every argument of every op, with every type it does not accept (others valid)."""
    out = []
    for op, specs in protocol.OPS.items():
        base = {spec.name: ("fuzz" if spec.types == (str,) else None) for spec in specs if spec.required}
        for spec in specs:
            for value in WRONG:
                if accepts(spec, value):
                    continue
                out.append(frame(pack({"v": 1, "op": op, "args": {**base, spec.name: value}})))
    return out


# --- the test --------------------------------------------------------------------------------
def test_fuzz_frames_against_a_live_agent(unlocked_agent: AgentProcess, capsys: pytest.CaptureFixture[str]) -> None:
    a = unlocked_agent
    with a.client() as c:
        c.store("bystander", BYSTANDER)
    bystander = a.client()
    count = 0

    def run(data: bytes) -> None:
        nonlocal count
        check_replies(data, exchange(a.socket, data))
        count += 1

    # first, deterministically: every length edge, alone and followed by a valid frame ...
    for length in _EDGES:
        for tail in (b"", protocol.encode_request("hello")):
            run(edge_frame(length, length) + tail)
    # ... and every argument of every op with each type it does not accept
    for data in wrong_type_frames():
        reply = msgpack.unpackb(exchange(a.socket, data)[4:], raw=False)
        assert reply["ok"] is False and reply["error"]["code"] == "bad_request", reply
        count += 1

    @settings(
        max_examples=BATCH,
        deadline=None,
        database=None,
        phases=[Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
    )
    @given(payloads(), st.integers(0, 2**32))
    def batch(data: bytes, seed: int) -> None:
        assume(not disruptive(data))
        run(data)
        rnd = random.Random(seed)
        for _ in range(MUTANTS):
            mutant = mutate(data, rnd)
            if not disruptive(mutant):
                run(mutant)

    start = time.monotonic()
    batches = 0
    # the budget bounds the extra cases; the first 1,000 run however slow the machine is
    while count < 1000 or time.monotonic() - start < BUDGET:
        batch()
        batches += 1
        # between batches: another connection is still served, and the agent is alive
        assert bystander.get("bystander") == BYSTANDER
        json.dumps(bystander.list(), default=str)  # whatever was stored, it still lists and prints
        with a.client() as fresh:
            assert fresh.hello()["protocol"] == protocol.PROTOCOL_VERSION
        assert a.proc is not None and a.proc.poll() is None
    elapsed = time.monotonic() - start
    bystander.close()
    with capsys.disabled():
        print(f"\nfuzz: {count} cases in {batches} batches, {elapsed:.1f} s, agent pid {a.pid} still serving")
    assert count >= 1000, f"only {count} cases ran in {elapsed:.0f} s"
    assert "Traceback" not in a.log(), a.log()[-3000:]
