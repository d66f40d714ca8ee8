#!/usr/bin/env python3
"""The agent's per-request Python cost, without sockets: the profile behind the README's misses.

    python3 benchmarks/profile_server.py          # us per request, then the cProfile top 12

Feeds pre-encoded ``get`` frames to a real ``Connection`` of a real ``Agent``
(unlocked, one cached value) through a transport that only collects writes,
so what is measured is framing, decoding, dispatch and encoding: the part of a
request that Python adds on top of the two syscalls ssh-agent also makes.
"""

from __future__ import annotations

import asyncio
import cProfile
import pstats
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.config import Options
from agent.handlers import make_dispatch
from agent.state import Agent, Entry
from agent.transport.connection import Connection, Server
from client import protocol


class _Transport:
    def __init__(self) -> None:
        self.out: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.out.append(data)

    def is_closing(self) -> bool:
        return False

    def resume_reading(self) -> None: ...

    def pause_reading(self) -> None: ...


def feed(conn: Connection, data: bytes, times: int) -> float:
    t0 = time.perf_counter()
    for _ in range(times):
        conn.data_received(data)
    return time.perf_counter() - t0


async def main() -> None:
    home = Path(tempfile.mkdtemp(prefix="cap-"))
    try:
        a = Agent(Options(home / "agent.sock", home / "vault.sqlite3"))
        a._storage = object()  # type: ignore[assignment]  # unlocked, as far as get is concerned
        a.entries[("bench0", protocol.DEFAULT_TYPE)] = Entry(0.0, 0.0, None, "bk_" + "x" * 37, {})
        conn = Connection(Server(make_dispatch(a), listener=None))  # type: ignore[arg-type]  # frames fed directly
        transport: Any = _Transport()
        conn.transport = transport
        frame = protocol.encode_request("get", {"platform": "bench0"})
        n = 50_000
        for label, data, reps in (("one frame per read", frame, n), ("100 frames per read", frame * 100, n // 100)):
            best = min(feed(conn, data, reps) for _ in range(5))
            transport.out.clear()
            print(f"agent, {label}: {best / n * 1e6:.2f} us per request")
        reply = protocol.encode_ok("bk_" + "x" * 37)[protocol.HEADER:]
        t0 = time.perf_counter()
        for _ in range(n):
            protocol.encode_request("get", {"platform": "bench0"})
        t1 = time.perf_counter()
        for _ in range(n):
            protocol.decode_reply(reply)
        t2 = time.perf_counter()
        print(f"client side: encode_request {(t1 - t0) / n * 1e6:.2f} us, decode_reply {(t2 - t1) / n * 1e6:.2f} us")
        prof = cProfile.Profile()
        prof.runcall(feed, conn, frame * 100, n // 100)
        pstats.Stats(prof).sort_stats("tottime").print_stats(12)
        a.close()
    finally:
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
