"""What the audit log costs the hot `get` path: the same agent build, audit on vs off.

    python benchmarks/audit_overhead.py [ROUNDS]

Runs two real agents (CREDENTIAL_AGENT_AUDIT_KEEP default vs 0), unlocked, each
with one credential, and times sequential `get`s and pipelined batches of 100 on
each, alternating, in the same process. Prints the medians and the ratio.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent.parent / "tests"), str(Path(__file__).resolve().parent.parent)]

from support import AgentProcess  # noqa: E402


def sequential(c, n: int) -> float:
    t = time.perf_counter()
    for _ in range(n):
        c.get("runpod")
    return (time.perf_counter() - t) / n


def pipelined(c, n: int) -> float:
    t = time.perf_counter()
    for _ in range(n // 100):
        c.get_many(["runpod"] * 100)
    return (time.perf_counter() - t) / n


def main(rounds: int = 7) -> None:
    agents = {name: AgentProcess(env={"CREDENTIAL_AGENT_AUDIT_KEEP": keep}).start()
              for name, keep in (("audit on", "10000"), ("audit off", "0"))}
    try:
        clients = {}
        for name, a in agents.items():
            a.init_passphrase()
            clients[name] = a.client()
            clients[name].store("runpod", "r" * 25)
            sequential(clients[name], 500)  # warm up
        results: dict[str, dict[str, list[float]]] = {n: {"sequential": [], "pipelined": []} for n in agents}
        for _ in range(rounds):
            for name, c in clients.items():
                results[name]["sequential"].append(sequential(c, 2000))
                results[name]["pipelined"].append(pipelined(c, 5000))
        for kind in ("sequential", "pipelined"):
            on = statistics.median(results["audit on"][kind]) * 1e6
            off = statistics.median(results["audit off"][kind]) * 1e6
            print(f"{kind:>10} get: audit on {on:6.1f} us, audit off {off:6.1f} us, ratio {on / off:.3f}")
        for c in clients.values():
            c.close()
    finally:
        for a in agents.values():
            a.cleanup()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 7)
