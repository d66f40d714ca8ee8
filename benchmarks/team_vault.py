"""The team vault, side by side in one run (not a test):

1. a cached team ``get`` through the agent, against the same read straight from
   OpenBao with hvac per call (what a connector pays without the agent), against a
   local ``get``: short interleaved blocks, medians of the per-block means;
2. leader failover on a three-node Raft cluster as a reading client sees it: the
   longest gap between successful reads through the agent, the same for a client
   reading OpenBao directly with hvac (trying each node in turn), and how long until
   an ``agent remote sync`` succeeds through another node.

    .venv/bin/python benchmarks/team_vault.py [--quick]
"""

from __future__ import annotations

import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT)]

from support.openbao import Bao, start_team_agent, until  # noqa: E402

KEY = "hf_" + "b" * 30


def block_us(fn: Any, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n * 1e6


def reads(quick: bool) -> None:
    bao = Bao().start_dev()
    a = None
    try:
        bao.client().secrets.kv.v2.create_or_update_secret("ml-team/huggingface", secret={"api-key": KEY})
        a = start_team_agent(bao.addrs, login=bao.token, refresh=3600)
        hv = bao.client()
        with a.client() as c:
            c.store("runpod", "r" * 25)
            assert c.get("huggingface") == KEY

            def direct() -> None:
                reply = hv.secrets.kv.v2.read_secret_version("ml-team/huggingface", raise_on_deleted_version=True)
                assert reply["data"]["data"]["api-key"] == KEY

            rows: dict[str, list[float]] = {"team": [], "hvac": [], "local": []}
            blocks, n = (5, 100) if quick else (15, 300)
            for i in range(blocks):
                order = [("team", lambda: c.get("huggingface")), ("hvac", direct), ("local", lambda: c.get("runpod"))]
                for name, fn in order if i % 2 == 0 else order[::-1]:
                    rows[name].append(block_us(fn, n if name != "hvac" else n // 5))
        team, direct_us, local = (statistics.median(rows[k]) for k in ("team", "hvac", "local"))
        ratios_hvac = statistics.median(h / t for h, t in zip(rows["hvac"], rows["team"], strict=True))
        ratios_local = statistics.median(t / lo for t, lo in zip(rows["team"], rows["local"], strict=True))
        print(f"cached team get through the agent : {team:8.1f} us")
        print(f"hvac read straight from OpenBao   : {direct_us:8.1f} us  ({ratios_hvac:.1f}x the cached team get)")
        print(f"local get through the agent       : {local:8.1f} us  (team/local {ratios_local:.2f}x)")
    finally:
        if a is not None:
            a.cleanup()
        bao.stop()


def failover(quick: bool) -> None:
    bao = Bao().start_cluster()
    a = None
    try:
        bao.client().secrets.kv.v2.create_or_update_secret("ml-team/huggingface", secret={"api-key": KEY})
        a = start_team_agent(bao.addrs, login=bao.token, refresh=3600, timeout=2, deadline=6)
        stop = threading.Event()
        gaps = {"agent": 0.0, "hvac": 0.0}
        failures = {"agent": 0, "hvac": 0}

        def agent_reader() -> None:
            assert a is not None
            with a.client() as c:
                last = time.perf_counter()
                while not stop.is_set():
                    try:
                        c.get("huggingface")
                    except Exception:
                        failures["agent"] += 1
                        continue
                    now = time.perf_counter()
                    gaps["agent"], last = max(gaps["agent"], now - last), now

        def hvac_reader() -> None:
            import hvac

            clients = [hvac.Client(url=u, token=bao.token, timeout=2) for u in bao.addrs]
            last = time.perf_counter()
            while not stop.is_set():
                for hv in clients:
                    try:
                        hv.secrets.kv.v2.read_secret_version("ml-team/huggingface", raise_on_deleted_version=True)
                        break
                    except Exception:
                        failures["hvac"] += 1
                else:
                    continue
                now = time.perf_counter()
                gaps["hvac"], last = max(gaps["hvac"], now - last), now
                time.sleep(0.005)

        threads = [threading.Thread(target=agent_reader), threading.Thread(target=hvac_reader)]
        for t in threads:
            t.start()
        time.sleep(1 if quick else 3)
        leader = bao.leader()
        killed = time.monotonic()
        bao.kill(leader)
        with a.client(timeout=30) as c:
            until(lambda: c.remote_sync("team")[0]["reachable"], 60, "a sync through another node", step=0.2)
        synced = time.monotonic() - killed
        time.sleep(1 if quick else 3)
        stop.set()
        for t in threads:
            t.join(10)
        print(f"leader killed: longest gap between reads through the agent {gaps['agent'] * 1e3:.1f} ms "
              f"({failures['agent']} failed)")
        print(f"               longest gap between hvac reads, node by node {gaps['hvac'] * 1e3:.0f} ms "
              f"({failures['hvac']} failed attempts)")
        print(f"               first successful agent sync after the kill {synced:.1f} s")
    finally:
        if a is not None:
            a.cleanup()
        bao.stop()


if __name__ == "__main__":
    quick = "--quick" in sys.argv
    reads(quick)
    failover(quick)
