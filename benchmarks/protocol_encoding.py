#!/usr/bin/env python3
"""Ways to encode a request and a reply frame, measured side by side in one run.

    python3 benchmarks/protocol_encoding.py            # ~1 minute
    python3 benchmarks/protocol_encoding.py --quick    # a smoke run

The variants produce the same bytes (checked first):
- ``packb``: ``msgpack.packb`` of the whole message (a new Packer per call);
- ``shared``: the whole message through the process's one Packer, under its lock
  (``client.protocol._pack``);
- ``head``: the fixed start of the map packed once (``{"v": 1, "op": op, "args": ``
  per op; ``{"v": 1, "ok": true, "result": `` for replies), then only the variable
  part through the shared Packer.
``client.protocol.encode_request`` / ``encode_ok`` are timed as they are today too.

Method: blocks of ``--n`` calls, every variant once per block in a rotating order;
the printed ratio is the median over blocks of (variant / packb) for the same block.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import msgpack

from client import protocol

V = protocol.PROTOCOL_VERSION
_pack, _frame = protocol._pack, protocol._frame


def head(*items: Any) -> bytes:
    """The packed start of a 3-entry map whose last value is still to come."""
    return b"\x83" + b"".join(_pack(x) for x in items)


REQUEST_HEADS = {op: head("v", V, "op", op, "args") for op in protocol.OPS}
OK_HEAD = head("v", V, "ok", True, "result")


def request_variants(op: str, args: dict[str, Any]) -> dict[str, Callable[[], bytes]]:
    return {
        "packb": lambda: _frame(msgpack.packb({"v": V, "op": op, "args": args}, use_bin_type=True)),
        "shared": lambda: _frame(_pack({"v": V, "op": op, "args": args})),
        "head": lambda: _frame(REQUEST_HEADS[op] + _pack(args)),
        "protocol.encode_request": lambda: protocol.encode_request(op, args),
    }


def reply_variants(result: Any) -> dict[str, Callable[[], bytes]]:
    return {
        "packb": lambda: _frame(msgpack.packb({"v": V, "ok": True, "result": result}, use_bin_type=True)),
        "shared": lambda: _frame(_pack({"v": V, "ok": True, "result": result})),
        "head": lambda: _frame(OK_HEAD + _pack(result)),
        "protocol.encode_ok": lambda: protocol.encode_ok(result),
    }


def block(fn: Callable[[], bytes], n: int) -> float:
    clock = time.perf_counter_ns
    t0 = clock()
    for _ in range(n):
        fn()
    return (clock() - t0) / n


def measure(name: str, variants: dict[str, Callable[[], bytes]], blocks: int, n: int) -> None:
    expected = variants["packb"]()
    for label, fn in variants.items():
        assert fn() == expected, f"{name}: {label} encodes differently"
    names = list(variants)
    per: dict[str, list[float]] = {k: [] for k in names}
    for i in range(blocks):
        k = i % len(names)
        for label in names[k:] + names[:k]:
            per[label].append(block(variants[label], n))
    print(f"\n{name} ({len(expected)} bytes)")
    print("| variant | ns per call (median) | ratio to packb (median of blocks) | ratio IQR |")
    print("|---|---|---|---|")
    for label in names:
        ratios = [x / b for x, b in zip(per[label], per["packb"], strict=True)]
        q = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3
        print(f"| {label} | {statistics.median(per[label]):.0f} | {statistics.median(ratios):.3f}x | "
              f"{q[0]:.3f}-{q[2]:.3f} |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--blocks", type=int, default=60)
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        args.blocks, args.n = 4, 200
    listing = [{"platform": f"platform{i}", "credential_type": "api-key", "created": 1.7e9 + i,
                "updated": 1.7e9 + i, "expires_at": None, "metadata": {"source": "env:X"}} for i in range(12)]
    cases: list[tuple[str, dict[str, Callable[[], bytes]]]] = [
        ('request get {"platform": "huggingface"}', request_variants("get", {"platform": "huggingface"})),
        ("request store (a 40-character value, metadata)",
         request_variants("store", {"platform": "wandb", "value": "w" * 40, "metadata": {"team": "ml"}})),
        ("request hello {}", request_variants("hello", {})),
        ("reply to get (a 40-character value)", reply_variants("x" * 40)),
        ("reply to get with expiry", reply_variants({"value": "x" * 40, "expires_at": 1.8e9})),
        ("reply to list (a page of 12 entries)", reply_variants(listing)),
        ("reply to lock (nil)", reply_variants(None)),
    ]
    print(f"protocol encoding: {args.blocks} blocks x {args.n} calls per variant; msgpack {msgpack.version}, "
          f"Python {sys.version.split()[0]}")
    for name, variants in cases:
        measure(name, variants, args.blocks, args.n)
    return 0


if __name__ == "__main__":
    sys.exit(main())
