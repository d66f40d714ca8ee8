#!/usr/bin/env python3
"""The client's hot path, this checkout against another revision of ``client/``, in one run.

    python3 benchmarks/client_hot_path.py --ref c901c7f        # ~2 minutes
    python3 benchmarks/client_hot_path.py --ref HEAD --quick   # a smoke run

What it times: a cached ``Client.get`` (and ``await AsyncClient.get``) against one
real ``agent serve`` (this checkout's agent, unlocked, one credential), from two
worker processes that differ only in the ``client`` package they import: this
checkout's and ``git archive <ref> client``. Nothing else differs, so the ratio is
the client's own cost.

Method (a small, shared VM is noisy):
- the workers are long-lived and take turns: block after block, alternating which
  goes first; a block is ``--n`` sequential gets; several fresh worker pairs, so one
  process's unlucky memory layout (with ASLR) cannot decide the result, and every
  process runs under ``setarch -R`` where that exists;
- per block: wall time per get and the worker's own CPU time per get (the part
  the client controls; the agent's time is the same for both);
- printed: the medians of each side and the median of the per-block ratios
  (this checkout / the ref), with their interquartile range;
- both workers run with glibc's mmap threshold fixed (``MALLOC_MMAP_THRESHOLD_``):
  asyncio reads into a fresh 256 KiB buffer per reply, which glibc serves from the
  heap or with mmap + mremap + munmap depending on the process's allocation history
  (its threshold moves), and that costs a worker far more than the client code
  does. Fixed, both serve it the same way.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT)]

from support import AgentProcess  # noqa: E402

KEY = "hp_" + "k" * 37

# One worker: imports `client` from argv[1], then answers "sync N" / "async N" with
# "<wall ns per get> <own CPU ns per get>".
WORKER = r"""
import sys
sys.path.insert(0, sys.argv[1])
import asyncio, time
import client
assert client.__file__.startswith(sys.argv[1]), client.__file__
from client import AsyncClient, Client

path = sys.argv[2]
c = Client(path, autostart=False, timeout=30)
get = c.get
loop = asyncio.new_event_loop()
ac = AsyncClient(path, autostart=False, timeout=30)
aget = ac.get

def sync_block(n):
    w0, c0 = time.perf_counter_ns(), time.thread_time_ns()
    for _ in range(n):
        get("hot")
    return time.perf_counter_ns() - w0, time.thread_time_ns() - c0

async def async_gets(n):
    for _ in range(n):
        await aget("hot")

def async_block(n):
    w0, c0 = time.perf_counter_ns(), time.thread_time_ns()
    loop.run_until_complete(async_gets(n))
    return time.perf_counter_ns() - w0, time.thread_time_ns() - c0

sync_block(500)
async_block(500)
for line in sys.stdin:
    kind, n = line.split()
    wall, cpu = (sync_block if kind == "sync" else async_block)(int(n))
    print(wall / int(n), cpu / int(n), flush=True)
"""


def pinned(cpu: int) -> list[str]:
    """Run on CPU ``cpu`` (the workers on 1, the agent on 0: neither migrates, and the
    two workers, which never run at once, share one CPU's caches and load)."""
    return ["taskset", "-c", str(cpu)] if shutil.which("taskset") and (os.cpu_count() or 1) > 1 else []


class Worker:
    def __init__(self, tree: Path, socket: Path, env: dict[str, str]) -> None:
        prefix = pinned(1) + (["setarch", platform.machine(), "-R"] if shutil.which("setarch") else [])
        self.proc = subprocess.Popen(
            [*prefix, sys.executable, "-c", WORKER, str(tree), str(socket)],
            env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )

    def block(self, kind: str, n: int) -> tuple[float, float]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"{kind} {n}\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"a worker exited with {self.proc.wait()}")
        wall, cpu = line.split()
        return float(wall), float(cpu)

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(30)


@contextlib.contextmanager
def client_trees(ref: str) -> Iterator[tuple[Path, Path]]:
    """``client/`` as of ``ref`` and as in this checkout, each copied to a temp dir of
    its own: the two workers' paths (and so their argv and memory layout) differ only
    in the temp dirs' random names, of equal length."""
    base, cur = Path(tempfile.mkdtemp(prefix="cahp-")), Path(tempfile.mkdtemp(prefix="cahp-"))
    try:
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref, "client"], capture_output=True, check=True)
        tar = base / "client.tar"
        tar.write_bytes(archive.stdout)
        with tarfile.open(tar) as t:
            t.extractall(base, filter="data")
        tar.unlink()
        shutil.copytree(ROOT / "client", cur / "client", ignore=shutil.ignore_patterns("__pycache__"))
        yield base, cur
    finally:
        shutil.rmtree(base, ignore_errors=True)
        shutil.rmtree(cur, ignore_errors=True)


def quartiles(xs: list[float]) -> tuple[float, float, float]:
    q = statistics.quantiles(xs, n=4) if len(xs) > 1 else [xs[0]] * 3
    return q[0], statistics.median(xs), q[2]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ref", default="HEAD", help="the revision whose client/ is the baseline (default HEAD)")
    ap.add_argument("--pairs", type=int, default=4, help="fresh worker pairs (default 4)")
    ap.add_argument("--blocks", type=int, default=30, help="blocks per pair and kind (default 30)")
    ap.add_argument("--n", type=int, default=1000, help="gets per block (default 1000)")
    ap.add_argument("--quick", action="store_true", help="tiny counts: a smoke run")
    args = ap.parse_args(argv)
    if args.quick:
        args.pairs, args.blocks, args.n = 1, 2, 200
    results: dict[str, dict[str, list[float]]] = {
        kind: {k: [] for k in ("base_wall", "cur_wall", "base_cpu", "cur_cpu", "wall_ratio", "cpu_ratio")}
        for kind in ("sync", "async")
    }
    a = AgentProcess()
    a.command = lambda *argv: [*pinned(0), sys.executable, "-m", "agent", *argv]  # type: ignore[method-assign]
    with client_trees(args.ref) as (base, cur), contextlib.ExitStack() as stack:
        stack.callback(a.cleanup)
        a.start()
        a.init_passphrase()
        with a.client(timeout=30) as c:
            c.store("hot", KEY)
        env = {**a.env, "PYTHONDONTWRITEBYTECODE": "1", "MALLOC_MMAP_THRESHOLD_": str(1024 * 1024)}
        env.pop("PYTHONPATH", None)
        for pair in range(args.pairs):
            workers = {"base": Worker(base, a.socket, env), "cur": Worker(cur, a.socket, env)}
            try:
                for i in range(args.blocks):
                    for kind in ("sync", "async"):
                        order = ("base", "cur") if (i + pair) % 2 == 0 else ("cur", "base")
                        got = {side: workers[side].block(kind, args.n) for side in order}
                        r = results[kind]
                        r["base_wall"].append(got["base"][0])
                        r["cur_wall"].append(got["cur"][0])
                        r["base_cpu"].append(got["base"][1])
                        r["cur_cpu"].append(got["cur"][1])
                        r["wall_ratio"].append(got["cur"][0] / got["base"][0])
                        r["cpu_ratio"].append(got["cur"][1] / got["base"][1])
            finally:
                for w in workers.values():
                    w.close()
    print(f"client hot path: this checkout vs client/ at {args.ref}; {args.pairs} worker pairs x {args.blocks} "
          f"interleaved blocks x {args.n} cached gets; load average {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print("| call | measure | ref (us/get) | this checkout (us/get) | ratio, median of blocks | ratio IQR |")
    print("|---|---|---|---|---|---|")
    for kind, label in (("sync", "Client.get"), ("async", "await AsyncClient.get")):
        r = results[kind]
        for what in ("wall", "cpu"):
            lo, mid, hi = quartiles(r[f"{what}_ratio"])
            name = "wall time" if what == "wall" else "client CPU"
            print(f"| {label} | {name} | {statistics.median(r[f'base_{what}']) / 1e3:.2f} | "
                  f"{statistics.median(r[f'cur_{what}']) / 1e3:.2f} | {mid:.3f}x | {lo:.3f}-{hi:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
