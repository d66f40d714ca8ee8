"""``agent ls`` of a team vault at 1,000 and 3,000 keys, and what a listing costs other
clients' reads, side by side in one run against a real OpenBao dev node (not a test):

    .venv-test/bin/python benchmarks/team_listing.py [--quick] [--rounds R] [--tree PATH]

Agents, all running side by side: per N, a team agent whose remote holds N keys, every
one listed (after ``agent remote sync``: the worst case, since without a sync ``agent
ls`` lists only the team keys this agent has read), and a local agent with the same N
names stored locally (no remote); and an agent holding one local key (what any ``agent
ls`` process costs: Python's start, the client, one page).

Each round, for each agent (the order alternating from round to round):

- quiet: a second client, in its own process, reads one cached key in a loop (a team key
  the team agent has served, a local key elsewhere) for ``QUIET`` seconds, nothing else
  asking the agent;
- listings: the same loop while ``agent ls`` and ``agent ls --json`` run as whole
  processes (output to a pipe, read whole), ``LISTINGS`` of each, alternating, back to back;
  each process timed from its start to its exit.

A listing row is the median over every round; a reader row pools every read of its phase
over the rounds (p50, p99, max, reads per second). Ratios compare within this run: the
team agent's listing against the local agent's of the same N, and the reader's p99 during
listings against its p99 when quiet on the same agent. ``--tree PATH`` runs the agents
and ``agent ls`` from another checkout (e.g. a worktree of an older revision, for a
before/after); the reader and this script stay this checkout's.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT)]

from client.protocol import LIST_PAGE  # noqa: E402
from support import AgentProcess, connect, raw_request, read_reply  # noqa: E402
from support.openbao import Bao, start_team_agent  # noqa: E402

QUIET = 1.5  # seconds the reader runs with no listing, per agent per round
LISTINGS = 2  # `agent ls` and `agent ls --json` each, per agent per round
SLOW_MS = 5  # a read this slow counts as delayed
READ_KEY = "tool00007"  # the cached key the second client reads (one of every agent's names)


def reader(sock: str) -> None:
    """``--reader SOCK``: read READ_KEY in a loop until a line comes on stdin; then print
    every read's latency (ns) and the loop's length, as JSON."""
    from client import Client

    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.readline(), stop.set()), daemon=True).start()
    samples: list[int] = []
    with Client(sock, autostart=False, timeout=60) as c:
        c.get(READ_KEY)
        print("ready", flush=True)
        clock, get = time.perf_counter_ns, c.get
        began = clock()
        while not stop.is_set():
            start = clock()
            get(READ_KEY)
            samples.append(clock() - start)
        ended = clock()
    print(json.dumps({"samples": samples, "seconds": (ended - began) / 1e9}), flush=True)


class Reader:
    """The second client, in its own process (its reads share no GIL with this script)."""

    def __init__(self, a: AgentProcess) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--reader", str(a.socket)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != "ready":
            raise RuntimeError("the reader did not start")

    def stop(self) -> tuple[list[int], float]:
        out, _ = self.proc.communicate("stop\n", timeout=120)
        got = json.loads(out)
        return got["samples"], got["seconds"]


class Subject:
    """One agent, what it holds, and what was measured of it."""

    def __init__(self, label: str, a: AgentProcess, n: int) -> None:
        self.label, self.agent, self.n = label, a, n
        self.times: dict[str, list[float]] = {"ls": [], "ls --json": []}
        self.reads: dict[str, list[int]] = {"quiet": [], "listings": []}
        self.seconds: dict[str, float] = {"quiet": 0.0, "listings": 0.0}
        self.first: list[int] = []  # a listing's first page (the team names are sorted then), ns
        self.pages: list[int] = []  # every later page, ns

    def ls(self, *args: str) -> float:
        start = time.perf_counter()
        done = subprocess.run(self.agent.command("ls", *args), env=self.agent.env, capture_output=True, timeout=600)
        elapsed = time.perf_counter() - start
        if done.returncode != 0:
            raise RuntimeError(f"{self.label}: agent ls failed: {done.stderr.decode(errors='replace')[-300:]}")
        lines = done.stdout.count(b"\n")
        listed = len(json.loads(done.stdout)) if args else lines - 1  # the table has a header line
        if listed != max(self.n, 1):
            raise RuntimeError(f"{self.label}: agent ls {' '.join(args)} listed {listed}, not {self.n}")
        return elapsed

    def walk(self) -> None:
        """One listing page by page as the client asks for it (a cursor after the first),
        each page's round trip timed: the longest time a listing holds the agent at once."""
        with connect(self.agent) as sock:
            sock.settimeout(600)
            args: dict[str, object] = {"offset": 0, "limit": LIST_PAGE}
            while True:
                start = time.perf_counter_ns()
                sock.sendall(raw_request("list", args))
                reply = read_reply(sock)
                took = time.perf_counter_ns() - start
                (self.first if args["offset"] == 0 else self.pages).append(took)
                page = reply["result"]
                if len(page) < LIST_PAGE:
                    return
                last = page[-1]
                args = {
                    "offset": args["offset"] + len(page),
                    "limit": LIST_PAGE,  # type: ignore[operator]
                    "after": [last["platform"], last["credential_type"]],
                }

    def round(self) -> None:
        r = Reader(self.agent)
        time.sleep(QUIET)
        self.add("quiet", *r.stop())
        r = Reader(self.agent)
        for _ in range(LISTINGS):
            self.times["ls"].append(self.ls())
            self.times["ls --json"].append(self.ls("--json"))
        self.add("listings", *r.stop())
        self.walk()

    def add(self, phase: str, samples: list[int], seconds: float) -> None:
        self.reads[phase].extend(samples)
        self.seconds[phase] += seconds


def fill(bao: Bao, prefix: str, n: int) -> None:
    from concurrent.futures import ThreadPoolExecutor

    def one(i: int) -> None:
        bao.client().secrets.kv.v2.create_or_update_secret(f"{prefix}/tool{i:05}", secret={"api-key": "k" * 32})

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one, range(n)))


def local_agent(n: int, env: dict[str, str]) -> AgentProcess:
    a = AgentProcess(env=env).start()
    a.init_passphrase()
    names = [f"tool{i:05}" for i in range(n)] if n > 1 else [READ_KEY]
    source = a.home / "import.json"
    source.write_text(json.dumps({name: "k" * 32 for name in names}))
    done = a.cli("import", "json", str(source), timeout=600)
    source.unlink()
    if done.returncode != 0:
        raise RuntimeError(f"import failed: {done.stderr[-300:]}")
    return a


def team_agent(bao: Bao, n: int, env: dict[str, str]) -> AgentProcess:
    prefix = f"list{n}"
    fill(bao, prefix, n)
    a = start_team_agent(bao.addrs, login=bao.token, prefix=prefix, refresh=3600, env=env)
    with a.client(timeout=600) as c:
        [synced] = c.remote_sync("team")
        if synced["cached_secrets"] != n:
            raise RuntimeError(f"synced {synced['cached_secrets']} of {n} team keys")
        c.get(READ_KEY)  # cached, and in use
    return a


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:,.0f} ms" if seconds < 10 else f"{seconds:,.1f} s"


def quantiles(samples: list[int]) -> tuple[float, float, float, float]:
    """p50, p99, p99.9 and max, in us."""
    s = sorted(samples)
    return s[len(s) // 2] / 1e3, s[int(len(s) * 0.99)] / 1e3, s[int(len(s) * 0.999)] / 1e3, s[-1] / 1e3


def slow(samples: list[int], seconds: float) -> str:
    """Reads that took over SLOW_MS, per second of the phase."""
    return f"{sum(1 for x in samples if x > SLOW_MS * 1e6) / seconds:.2f}/s"


def report(subjects: list[Subject]) -> None:
    by = {s.label: s for s in subjects}
    base = by["1 local key"]
    print("agent ls as a whole process (median of the rounds):\n")
    print("| agent | agent ls | vs local | less 1 key | agent ls --json | vs local | less 1 key |")
    print("|---|---|---|---|---|---|---|")
    for s in subjects:
        cells = []
        for row in ("ls", "ls --json"):
            t = statistics.median(s.times[row])
            local = by.get(f"local {s.n:,}") if s.label.startswith("team") else None
            vs = f"{t / statistics.median(local.times[row]):.2f}x" if local else ""
            less = "" if s is base else ms(t - statistics.median(base.times[row]))
            cells += [ms(t), vs, less]
        print(f"| {s.label} | " + " | ".join(cells) + " |")
    print(f"\none listing's pages of {LIST_PAGE} entries, each round trip (every round's walk):\n")
    print("| agent | first page median / max | later pages p50 / p99 / max | pages |")
    print("|---|---|---|---|")
    for s in subjects:
        later = quantiles(s.pages) if s.pages else (0.0, 0.0, 0.0, 0.0)
        first = f"{statistics.median(s.first) / 1e3:,.0f} / {max(s.first) / 1e3:,.0f} us"
        print(
            f"| {s.label} | {first} | {later[0]:,.0f} / {later[1]:,.0f} / {later[3]:,.0f} us | "
            f"{len(s.pages) // len(s.first) + 1} |"
        )
    print("\nthe second client's cached get, quiet and during listings (every read of the rounds):\n")
    print(
        f"| agent | quiet p50 / p99 / p99.9 / max | reads/s | > {SLOW_MS} ms | listings p50 / p99 / p99.9 / max "
        f"| reads/s | > {SLOW_MS} ms | p99 listings/quiet | p99 vs local |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for s in subjects:
        q, busy = quantiles(s.reads["quiet"]), quantiles(s.reads["listings"])
        rate_q = len(s.reads["quiet"]) / s.seconds["quiet"]
        rate_b = len(s.reads["listings"]) / s.seconds["listings"]
        local = by.get(f"local {s.n:,}") if s.label.startswith("team") else None
        vs = f"{busy[1] / quantiles(local.reads['listings'])[1]:.2f}x" if local else ""
        print(
            f"| {s.label} | {' / '.join(f'{x:,.0f}' for x in q)} us | {rate_q:,.0f} | "
            f"{slow(s.reads['quiet'], s.seconds['quiet'])} | {' / '.join(f'{x:,.0f}' for x in busy)} us | "
            f"{rate_b:,.0f} | {slow(s.reads['listings'], s.seconds['listings'])} | {busy[1] / q[1]:.2f}x | {vs} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N = 100 and 300, one round: a smoke run")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tree", type=Path, help="run the agents from this checkout instead")
    args = parser.parse_args()
    sizes = [100, 300] if args.quick else [1_000, 3_000]
    rounds = 1 if args.quick else args.rounds
    env = {"PYTHONPATH": str(args.tree.resolve())} if args.tree else {}
    if args.tree:
        os.chdir(args.tree)  # `python -m agent` puts its working directory first on sys.path
    started, load = time.time(), os.getloadavg()
    bao = Bao().start_dev()
    subjects: list[Subject] = []
    try:
        subjects.append(Subject("1 local key", local_agent(1, env), 1))
        for n in sizes:
            subjects.append(Subject(f"local {n:,}", local_agent(n, env), n))
            subjects.append(Subject(f"team {n:,}", team_agent(bao, n, env), n))
            print(f"N = {n:,}: set up", file=sys.stderr, flush=True)
        for r in range(rounds):
            for s in subjects if r % 2 == 0 else subjects[::-1]:
                s.round()
            print(f"round {r + 1} of {rounds} done", file=sys.stderr, flush=True)
        sorts = []
        for s in subjects:
            with s.agent.client() as c:
                sorts.append(f"{s.label} {c.status().get('listing_sorts', '-')}")
    finally:
        for s in subjects:
            s.agent.cleanup()
        bao.stop()
    when = datetime.datetime.fromtimestamp(started, datetime.UTC).strftime("%Y-%m-%d %H:%M")
    tree = f"agents from {args.tree}" if args.tree else "agents from this checkout"
    print(
        f"Measured {when} UTC, {tree}, {os.cpu_count()} CPUs; load average {load[0]:.2f}, {load[1]:.2f}, "
        f"{load[2]:.2f} before, {os.getloadavg()[0]:.2f} after; {rounds} rounds of {LISTINGS} `agent ls` and "
        f"{LISTINGS} `agent ls --json` per agent; took {time.time() - started:.0f} s.\n"
    )
    report(subjects)
    listings = (2 * LISTINGS + 1) * rounds  # the processes' and the walks'
    print(f"\nsorts of the names (agent status listing_sorts, {listings} listings each): " + ", ".join(sorts))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--reader"]:
        reader(sys.argv[2])
    else:
        main()
