#!/usr/bin/env python3
"""The agent at 1,000, 10,000 (and, with --large, 100,000) stored credentials, in one run.

    .venv-test/bin/python benchmarks/scale.py            # N = 1,000 and 10,000 (a few minutes)
    .venv-test/bin/python benchmarks/scale.py --large    # and 100,000 (much longer)
    .venv-test/bin/python benchmarks/scale.py --quick    # a smoke run: N = 100 and 300, the others at 100 only
    .venv-test/bin/python benchmarks/scale.py --sizes 100000 --rounds 1   # any N
    .venv-test/bin/python benchmarks/scale.py --no-others  # the agent alone

Beside the agent, at each N: the Secret Service (gnome-keyring on a private bus) and
``pass``, where they finish (``scale_others.py``: each step stops after ``--limit``
seconds, 120 by default, and says after how many items), at N up to ``--others-max``
(10,000 by default: neither reached 10,000 within the limit).

Method: one real agent per N (``python -m agent serve``, a passphrase vault), all of
them running side by side, plus an empty one, so that every measurement of a round
is taken on every N within a few seconds of each other (a shared machine's load
changes from minute to minute). Each round measures every N, the order of the N
alternating from round to round; a row gives the median of the rounds. The
baseline of each row is the same row at the smallest N (or the empty agent, for
start and memory) in the same run: the ratio says how the cost grows with N
(10x the credentials at a linear cost is 10x; a quadratic one, 100x).

Rows: ``agent import json`` of N records (once, it builds the vault); ``unlock``
(scrypt, then every row opened); start to first answer (``agent serve`` of a
stopped agent until a ``hello`` comes back, its vault still locked); a cached ``get``,
p50 and p99 of blocks of 500 random names; ``agent ls`` and ``agent ls --json`` as
processes (output to a pipe, read whole); ``agent export --include-values`` to a
file; ``rotate-key`` (through the client: scrypt and every row re-sealed); the
agent's RSS unlocked after reading every value, and after ``agent lock``; a lookup as
a process (``agent get NAME``, 20 random names a round), to set beside ``secret-tool
lookup`` and ``pass show``.
A command that fails or passes ``--timeout`` is shown as such, not as a figure.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import scale_others  # noqa: E402

from client import errors  # noqa: E402
from support import PASSPHRASE, AgentProcess, raw_request  # noqa: E402

BLOCK = 500  # gets per block


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


class Failed(Exception):
    """A measurement that did not complete: its one-line reason is shown in the table."""


class Vault:
    """One agent holding ``n`` credentials, and what was measured of it."""

    def __init__(self, n: int, timeout: float) -> None:
        self.n = n
        self.timeout = timeout
        self.agent = AgentProcess()
        self.names = [f"s{i:06d}" for i in range(n)]
        rng = random.Random(n)
        self.values = [rng.randbytes(20).hex() for _ in range(n)]
        self.results: dict[str, list[float] | str] = {}

    def record(self, row: str, measure: Callable[[], float]) -> None:
        if isinstance(self.results.get(row), str):
            return  # failed once: not tried again
        try:
            value = measure()
        except (Failed, errors.AgentError, subprocess.TimeoutExpired) as e:
            why = f"timed out after {self.timeout:g} s" if isinstance(e, subprocess.TimeoutExpired) else str(e)
            self.results[row] = f"failed: {why}"[:80]
            return
        samples = self.results.setdefault(row, [])
        assert isinstance(samples, list)
        samples.append(value)

    def cli(self, *args: str) -> float:
        start = time.perf_counter()
        done = subprocess.run(
            self.agent.command(*args),
            env=self.agent.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=self.timeout,
        )
        elapsed = time.perf_counter() - start
        if done.returncode != 0:
            raise Failed(done.stderr.decode(errors="replace").strip().splitlines()[-1:] or f"exit {done.returncode}")
        return elapsed

    def setup(self) -> None:
        self.agent.start()
        self.agent.init_passphrase()
        if not self.n:
            return
        source = self.agent.home / "import.json"
        source.write_text(json.dumps(dict(zip(self.names, self.values, strict=True))))
        self.record("import", lambda: self.cli("import", "json", str(source)))
        source.unlink()

    def client(self) -> object:
        return self.agent.client(timeout=self.timeout)

    def timed(self, fn: Callable[[], object]) -> float:
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start

    def unlock(self) -> None:
        with self.agent.client(timeout=self.timeout) as c:
            c.lock()
            self.record("unlock", lambda: self.timed(lambda: c.unlock(PASSPHRASE)))

    def restart(self) -> None:
        """Stop the agent, start it again, and time its first answer (vault locked)."""
        self.agent.stop()
        hello = raw_request("hello")
        start = time.perf_counter()
        self.agent.start(wait=False)
        deadline = start + self.timeout
        while True:
            if time.perf_counter() > deadline:
                raise Failed("no answer")
            try:
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                    s.settimeout(self.timeout)
                    s.connect(str(self.agent.socket))
                    s.sendall(hello)
                    if s.recv(4):
                        break
            except OSError:
                time.sleep(0.001)
        self.results.setdefault("start to first answer", []).append(time.perf_counter() - start)  # type: ignore[union-attr]
        with self.agent.client(timeout=self.timeout) as c:
            c.unlock(PASSPHRASE)

    def gets(self, rng: random.Random) -> None:
        if not self.n:
            return
        with self.agent.client(timeout=self.timeout) as c:
            picks = [rng.choice(self.names) for _ in range(BLOCK)]
            samples = []
            for name in picks:
                start = time.perf_counter_ns()
                c.get(name)
                samples.append(time.perf_counter_ns() - start)
        samples.sort()
        self.results.setdefault("get p50", []).append(samples[len(samples) // 2] / 1e9)  # type: ignore[union-attr]
        self.results.setdefault("get p99", []).append(samples[int(len(samples) * 0.99)] / 1e9)  # type: ignore[union-attr]

    def processes(self, rng: random.Random) -> None:
        if self.n:
            for name in [rng.choice(self.names) for _ in range(scale_others.LOOKUPS)]:
                self.record("agent get (a process)", lambda name=name: self.cli("get", name))  # type: ignore[misc]
        self.record("agent ls", lambda: self.cli("ls"))
        self.record("agent ls --json", lambda: self.cli("ls", "--json"))
        out = self.agent.home / "export.json"
        self.record("export --include-values", lambda: self.cli("export", "--include-values", "--force", str(out)))
        out.unlink(missing_ok=True)

    def rotate(self) -> None:
        with self.agent.client(timeout=self.timeout) as c:
            self.record("rotate-key", lambda: self.timed(lambda: c.rotate_key(PASSPHRASE)))

    def memory(self) -> None:
        """RSS with every value read (unlocked), then after ``lock``; unlocked again after."""
        with self.agent.client(timeout=self.timeout) as c:
            for i in range(0, self.n, 1000):
                c.get_many(self.names[i : i + 1000])
            self.results.setdefault("RSS unlocked", []).append(rss_kib(self.agent.pid) / 1024)  # type: ignore[union-attr]
            c.lock()
            time.sleep(0.3)
            self.results.setdefault("RSS after lock", []).append(rss_kib(self.agent.pid) / 1024)  # type: ignore[union-attr]
            c.unlock(PASSPHRASE)


UNITS = {"RSS unlocked": "MiB", "RSS after lock": "MiB", "get p50": "us", "get p99": "us"}
ROWS = [
    "import",
    "unlock",
    "start to first answer",
    "get p50",
    "get p99",
    "agent ls",
    "agent ls --json",
    "export --include-values",
    "rotate-key",
    "RSS unlocked",
    "RSS after lock",
]
# rows whose baseline is the empty agent rather than the smallest N
AGAINST_EMPTY = {"start to first answer", "RSS unlocked", "RSS after lock"}


def shown(row: str, value: float) -> str:
    unit = UNITS.get(row, "s")
    if unit == "us":
        return f"{value * 1e6:,.1f} us"
    if unit == "MiB":
        return f"{value:,.1f} MiB"
    return f"{value * 1000:,.0f} ms" if value < 1 else f"{value:,.2f} s"


def table(vaults: list[Vault], empty: Vault) -> str:
    sized = [v for v in vaults if v.n]
    head = "| measurement | empty agent | " + " | ".join(f"N = {v.n:,}" for v in sized) + " |"
    lines = [head, "|" + "---|" * (len(sized) + 2)]
    for row in ROWS:
        base_vault = empty if row in AGAINST_EMPTY else sized[0]
        base = base_vault.results.get(row)
        base_value = statistics.median(base) if isinstance(base, list) and base else None
        cells = []
        for v in [empty, *sized]:
            got = v.results.get(row)
            if isinstance(got, str):
                cells.append(got)
            elif not got:
                cells.append("")
            else:
                value = statistics.median(got)
                no_ratio = base_value is None or v is base_vault or v is empty
                ratio = "" if no_ratio else f" ({value / base_value:.2f}x)"
                cells.append(shown(row, value) + ratio)
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


OTHER_ROWS = [
    "store N secrets (one program)",
    "lookup p50 (a process)",
    "lookup, slowest (a process)",
    "list (a process)",
    "daemon RSS",
]


def others(sizes: list[int], limit: float) -> dict[int, list[scale_others.Side | str]]:
    """Each other side at each N: stored, looked up, listed, its daemon's memory read; then stopped."""
    rng = random.Random(2)
    measured: dict[int, list[scale_others.Side | str]] = {}
    for n in sizes:
        names = [f"s{i:06d}" for i in range(n)]
        gen = random.Random(n)
        values = [gen.randbytes(20).hex() for _ in range(n)]
        measured[n] = []
        for kind in scale_others.SIDES:
            side = scale_others.start(kind, n, limit)
            if isinstance(side, scale_others.Side):
                try:
                    side.fill(names, values)
                    side.lookups(names, rng)
                    side.listing()
                    side.memory()
                finally:
                    side.close()
            print(f"N = {n:,}: {kind.label} done", file=sys.stderr, flush=True)
            measured[n].append(side)
    return measured


def beside(vaults: list[Vault], measured: dict[int, list[scale_others.Side | str]]) -> str:
    """The agent's column beside the others', per N."""
    sized = [v for v in vaults if v.n]
    head = ["measurement"]
    for v in sized:
        head += [f"agent, N = {v.n:,}"] + [f"{k.label}, N = {v.n:,}" for k in scale_others.SIDES]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def agent_cell(v: Vault, row: str) -> str:
        source = {
            "store N secrets (one program)": "import",
            "list (a process)": "agent ls",
            "daemon RSS": "RSS unlocked",
        }.get(row, "agent get (a process)")
        got = v.results.get(source)
        if isinstance(got, str) or not got:
            return got or ""
        if source == "agent get (a process)":
            ordered = sorted(got)
            return shown("s", ordered[len(ordered) // 2] if "p50" in row else ordered[-1])
        return shown(source, statistics.median(got))

    def other_cell(side: scale_others.Side | str, row: str) -> str:
        if isinstance(side, str):
            return side
        key = {"store N secrets (one program)": "store", "list (a process)": "list", "daemon RSS": "daemon RSS"}
        got = side.results.get(key.get(row, "lookup"))
        if got is None:
            return "nothing stored" if not side.stored else ""
        if isinstance(got, str):
            return got
        if isinstance(got, list):
            ordered = sorted(got)
            value = ordered[len(ordered) // 2] if "p50" in row else ordered[-1]
        else:
            value = got
        cell = shown("RSS unlocked" if row == "daemon RSS" else "s", value)
        return cell + (side.held() if row != "store N secrets (one program)" else "")

    for row in OTHER_ROWS:
        cells = [row]
        for v in sized:
            cells.append(agent_cell(v, row))
            sides = measured.get(v.n) or ["not run (N above --others-max)"] * len(scale_others.SIDES)
            cells += [other_cell(side, row) for side in sides]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--large", action="store_true", help="add N = 100,000 (slow)")
    parser.add_argument("--quick", action="store_true", help="N = 100 and 300, one round: a smoke run")
    parser.add_argument("--sizes", type=lambda t: [int(n) for n in t.split(",")], help="N to measure, e.g. 100000")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=600.0, help="give up a command after this long")
    parser.add_argument("--no-others", action="store_true", help="the agent alone: no Secret Service, no pass")
    parser.add_argument("--limit", type=float, default=120.0, help="give up a step of the others after this long")
    parser.add_argument("--others-max", type=int, default=10_000, help="run the others at N up to this")
    args = parser.parse_args()
    sizes = [100, 300] if args.quick else [1_000, 10_000] + ([100_000] if args.large else [])
    sizes = args.sizes or sizes
    limit = min(args.limit, 5.0) if args.quick else args.limit
    rounds = 1 if args.quick else args.rounds
    if args.quick:  # a smoke run: every row, few samples
        scale_others.LOOKUPS = 4
    started = time.time()
    load = os.getloadavg()
    empty = Vault(0, args.timeout)
    vaults = [Vault(n, args.timeout) for n in sizes]
    everyone = [empty, *vaults]
    try:
        for v in everyone:
            v.setup()
            print(f"N = {v.n:,}: set up", file=sys.stderr, flush=True)
        rng = random.Random(1)
        for r in range(rounds):
            order = everyone if r % 2 == 0 else everyone[::-1]
            for step in (Vault.restart, Vault.unlock, Vault.gets, Vault.processes, Vault.memory, Vault.rotate):
                for v in order:
                    step(v, rng) if step in (Vault.gets, Vault.processes) else step(v)  # type: ignore[call-arg]
            print(f"round {r + 1} of {rounds} done", file=sys.stderr, flush=True)
    finally:
        for v in everyone:
            v.agent.cleanup()
    others_max = min(args.others_max, sizes[0]) if args.quick else args.others_max
    measured = {} if args.no_others else others([n for n in sizes if n <= others_max], limit)
    when = datetime.datetime.fromtimestamp(started, datetime.UTC).strftime("%Y-%m-%d %H:%M")
    print(
        f"Measured {when} (UTC), {os.cpu_count()} CPUs, Python {sys.version.split()[0]}; load average "
        f"{load[0]:.2f}, {load[1]:.2f}, {load[2]:.2f} before, {os.getloadavg()[0]:.2f} after; "
        f"{rounds} rounds, medians; took {time.time() - started:.0f} s.\n"
    )
    print(table(vaults, empty))
    if measured:
        print(f"\nBeside the Secret Service and pass (each step stopped after {limit:g} s):\n")
        print(beside(vaults, measured))


if __name__ == "__main__":
    main()
