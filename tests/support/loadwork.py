"""A load worker: mixed store/get/update/delete on shared and private keys, logged.

Used by threads of the test process and, as ``python tests/support/loadwork.py SOCK FIRST
THREADS SECONDS SEED``, by worker processes that print their log as JSON. Each log
record is ``[op, platform, value, outcome, t_start, t_end]`` with CLOCK_MONOTONIC
times (one clock for every process of the machine) and ``outcome`` one of ``ok``,
``not_found`` or ``error:<code>``.
"""

from __future__ import annotations

import json
import random
import sys
import threading
import time
from pathlib import Path
from typing import Any

Record = list[Any]

SHARED = [f"shared{i}" for i in range(8)]
PRIVATE_PER_WORKER = 4
# an op is drawn from this table: store and get dominate, as for real connectors
OPS = ["store"] * 3 + ["get"] * 4 + ["update"] * 2 + ["delete"] * 2


def private_keys(worker: int) -> list[str]:
    return [f"w{worker}k{i}" for i in range(PRIVATE_PER_WORKER)]


def work(sock: Path, worker: int, stop_at: float, seed: int) -> list[Record]:
    from client import Client, errors

    rnd = random.Random(seed * 1000 + worker)
    mine = private_keys(worker)
    log: list[Record] = []
    seq = 0
    with Client(sock, autostart=False, timeout=60) as c:
        while time.monotonic() < stop_at:
            op = rnd.choice(OPS)
            platform = rnd.choice(SHARED) if rnd.random() < 0.4 else rnd.choice(mine)
            value = None
            if op in ("store", "update"):
                seq += 1
                value = f"val-{worker}-{seq}-{rnd.getrandbits(32):08x}"
            t0 = time.monotonic()
            try:
                if op == "store":
                    c.store(platform, value)  # type: ignore[arg-type]
                elif op == "update":
                    c.update(platform, value)  # type: ignore[arg-type]
                elif op == "delete":
                    c.delete(platform)
                else:
                    value = c.get(platform)
                outcome = "ok"
            except errors.NotFound:
                outcome = "not_found"
            except errors.AgentError as e:
                outcome = f"error:{e.code}"
            log.append([op, platform, value, outcome, t0, time.monotonic()])
    return log


def run_threads(sock: Path, first: int, threads: int, seconds: float, seed: int) -> list[Record]:
    stop_at = time.monotonic() + seconds
    logs: list[list[Record]] = [[] for _ in range(threads)]

    def one(i: int) -> None:
        logs[i] = work(sock, first + i, stop_at, seed)

    ts = [threading.Thread(target=one, args=(i,)) for i in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return [r for log in logs for r in log]


if __name__ == "__main__":
    sock, first, threads, seconds, seed = sys.argv[1:6]
    json.dump(run_threads(Path(sock), int(first), int(threads), float(seconds), int(seed)), sys.stdout)
