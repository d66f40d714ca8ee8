#!/usr/bin/env python3
"""The agent at 1,000, 10,000 (and, with --large, 100,000) stored credentials, in one run.

    .venv-test/bin/python benchmarks/scale.py            # N = 1,000 and 10,000 (a few minutes)
    .venv-test/bin/python benchmarks/scale.py --large    # and 100,000 (much longer)
    .venv-test/bin/python benchmarks/scale.py --quick    # N = 100 and 300, one round (a smoke run)
    .venv-test/bin/python benchmarks/scale.py --sizes 100000 --rounds 1   # any N

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
agent's RSS unlocked after reading every value, and after ``agent lock``.
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
        rng = random.Random(self.n)
        source.write_text(json.dumps({name: rng.randbytes(20).hex() for name in self.names}))
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

    def processes(self) -> None:
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--large", action="store_true", help="add N = 100,000 (slow)")
    parser.add_argument("--quick", action="store_true", help="N = 100 and 300, one round: a smoke run")
    parser.add_argument("--sizes", type=lambda t: [int(n) for n in t.split(",")], help="N to measure, e.g. 100000")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=600.0, help="give up a command after this long")
    args = parser.parse_args()
    sizes = [100, 300] if args.quick else [1_000, 10_000] + ([100_000] if args.large else [])
    sizes = args.sizes or sizes
    rounds = 1 if args.quick else args.rounds
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
                    step(v, rng) if step is Vault.gets else step(v)  # type: ignore[call-arg]
            print(f"round {r + 1} of {rounds} done", file=sys.stderr, flush=True)
    finally:
        for v in everyone:
            v.agent.cleanup()
    when = datetime.datetime.fromtimestamp(started, datetime.UTC).strftime("%Y-%m-%d %H:%M")
    print(
        f"Measured {when} (UTC), {os.cpu_count()} CPUs, Python {sys.version.split()[0]}; load average "
        f"{load[0]:.2f}, {load[1]:.2f}, {load[2]:.2f} before, {os.getloadavg()[0]:.2f} after; "
        f"{rounds} rounds, medians; took {time.time() - started:.0f} s.\n"
    )
    print(table(vaults, empty))


if __name__ == "__main__":
    main()
