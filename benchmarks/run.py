#!/usr/bin/env python3
"""credential-agent side by side with OpenSSH's ssh-agent, measured in one run.

    python3 benchmarks/run.py              # the full table (a few minutes)
    python3 benchmarks/run.py --quick      # every row once, tiny counts (a smoke run)
    python3 benchmarks/run.py --no-install # without the section of a plain pip install

Method (a small, shared VM is noisy):
- this process re-executes itself under ``taskset -c 0 setarch <arch> -R``: the
  client, ssh-agent and the Python agent (started the same way) share CPU 0, and
  no CPython process draws an unlucky address-space layout (with ASLR on, about
  one process in seven runs 40-55% slower for its whole life);
- the sequential rows run first, with no other connection open to either daemon
  (ssh-agent's poll() loop pays for every idle descriptor, the agent's epoll does
  not: 64 idle connections flattered the agent); they run in short blocks that
  alternate, block after block, which side goes first; a row gives the median of
  the per-block ratios and their spread (10th-90th percentile);
- the 64 connections of the throughput row are opened for that row and closed after;
- the other rows run in rounds, each side back to back, alternating which goes first;
- per-request syscalls of each side come from ``strace -c`` over N requests
  (the count for 2N minus the count for N, so start-up does not count);
- then the same rows the way users run it: a fresh venv with a plain
  ``pip install`` of this checkout, the agent started by its ``agent start``, a
  client process started normally (not pinned, ASLR on), against an ssh-agent
  started the same way; and the ``agent`` command itself against
  ``secret-tool lookup`` (libsecret's C tool, on a real Secret Service);
- the autostart cold path (``autostart.py``), in both sections: a first ``Client().get``
  with no agent running on a keystore vault, and a locked passphrase vault's first
  ``status``, beside ``secret-tool lookup`` and the warm client in the same rounds.

The baseline for the socket rows is ``ssh-agent -D`` answering
SSH_AGENTC_REQUEST_IDENTITIES (``00 00 00 01 0b``) to a Python client as simple as
it gets (sendall, recv); the agent under test is a real ``python -m agent serve``
with a passphrase vault, unlocked, driven through ``client.Client``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import gc
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import autostart  # noqa: E402  # the autostart cold path's rounds

# the sequential loops a plain pip install's client also runs (there, alone, as a script)
from installed_driver import SSH_REQUEST, agent_block, ssh_block  # noqa: E402

from client import Client, protocol  # noqa: E402
from support import SecretService, SecretServiceUnavailable, base_env  # noqa: E402

PASSPHRASE = "benchmark passphrase, not a secret"
VALUE = "bk_" + "x" * 37  # a 40-character API key
NAMES = [f"bench{i}" for i in range(100)]
CLOCK_TICK = os.sysconf("SC_CLK_TCK")
PINNED = "CA_BENCH_PINNED"


# --- small helpers ----------------------------------------------------------------------
def pct(samples: Sequence[float], q: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, int(q * len(s)))]


def cpu_seconds(pid: int) -> float:
    """utime + stime of a whole process (all threads), from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICK


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def read_frame(sock: socket.socket, buf: bytearray) -> None:
    """Read one length-prefixed frame (ssh-agent and the agent frame alike) and drop it."""
    while True:
        if len(buf) >= 4:
            end = 4 + int.from_bytes(buf[:4], "big")
            if len(buf) >= end:
                del buf[:end]
                return
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("peer closed")
        buf += chunk


def connect(path: Path) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(str(path))
    return s


def wait_for_socket(path: Path, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode}")
        with contextlib.suppress(OSError):
            connect(path).close()
            return
        time.sleep(0.02)
    raise RuntimeError(f"nothing answered at {path}")


def pin_prefix() -> list[str]:
    prefix = []
    if shutil.which("taskset"):
        prefix += ["taskset", "-c", "0"]
    return prefix


def unpin() -> None:
    """For a process started "normally": every CPU again (children inherit taskset's mask)."""
    with contextlib.suppress(OSError, AttributeError):
        os.sched_setaffinity(0, range(os.cpu_count() or 1))


def norandom_prefix() -> list[str]:
    return ["setarch", platform.machine(), "-R"] if shutil.which("setarch") else []


def site_path() -> str:
    """This checkout, then site-packages: for ``python -S`` (see process_round)."""
    paths = sysconfig.get_paths()
    return os.pathsep.join(dict.fromkeys([str(ROOT), paths["purelib"], paths["platlib"]]))


def checkout_env(home: Path) -> dict[str, str]:
    """An agent's environment in ``home``, running this checkout (``python -S`` with site-packages
    on PYTHONPATH), writing bytecode as an installation does."""
    env = base_env(home, {"PYTHONPATH": site_path()})
    env.pop("PYTHONDONTWRITEBYTECODE")
    return env


# --- the two daemons ----------------------------------------------------------------------
@dataclass
class Daemons:
    home: Path
    env: dict[str, str]
    agent_sock: Path
    ssh_sock: Path
    agent: subprocess.Popen[bytes] | None = None
    ssh: subprocess.Popen[bytes] | None = None

    @classmethod
    @contextlib.contextmanager
    def running(cls) -> Iterator[Daemons]:
        home = Path(tempfile.mkdtemp(prefix="cab-", dir="/tmp"))
        env = checkout_env(home)
        d = cls(home, env, Path(env["CREDENTIAL_AGENT_SOCK"]), home / "ssh.sock")
        try:
            d.ssh = subprocess.Popen([*pin_prefix(), "ssh-agent", "-D", "-a", str(d.ssh_sock)],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            log = open(home / "agent.log", "wb")
            d.agent = subprocess.Popen(
                [*pin_prefix(), *norandom_prefix(), sys.executable, "-S", "-m", "agent", "serve",
                 "--log-level", "warning"],
                env=env, cwd=home, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            )
            log.close()
            wait_for_socket(d.ssh_sock, d.ssh)
            wait_for_socket(d.agent_sock, d.agent)
            yield d
        finally:
            for p in (d.agent, d.ssh):
                if p is not None and p.poll() is None:
                    p.terminate()
                    try:
                        p.wait(15)
                    except subprocess.TimeoutExpired:
                        p.kill()
                        p.wait(5)
            shutil.rmtree(home, ignore_errors=True)

    def client(self) -> Client:
        return Client(self.agent_sock, autostart=False, timeout=30)


# --- measurements --------------------------------------------------------------------------
@dataclass
class Row:
    name: str
    unit: str  # of the agent/baseline columns
    baseline_name: str
    target: str = ""
    check: Callable[[float], bool] | None = None
    agent: list[float] = field(default_factory=list)
    base: list[float] = field(default_factory=list)
    ratios: list[float] = field(default_factory=list)
    skipped: str | None = None
    note: str = ""
    absolute: bool = False  # `check` is given the agent's median (a target in its unit), not the ratio

    def spread(self) -> str:
        """The 10th-90th percentile of the per-block (per-round) ratios."""
        if len(self.ratios) < 3 or not self.baseline_name:
            return ""
        return f"{pct(self.ratios, 0.1):.2f}-{pct(self.ratios, 0.9):.2f}x"

    def add(self, agent: float, base: float, ratio: float | None = None) -> None:
        self.agent.append(agent)
        self.base.append(base)
        self.ratios.append(agent / base if ratio is None else ratio)


def many_connections(socks: list[socket.socket], frame: bytes, iterations: int) -> float:
    """Requests per second with one request in flight on every connection."""
    bufs = [bytearray() for _ in socks]
    t0 = time.perf_counter()
    for _ in range(iterations):
        for s in socks:
            s.sendall(frame)
        for s, b in zip(socks, bufs, strict=True):
            read_frame(s, b)
    return iterations * len(socks) / (time.perf_counter() - t0)


def ssh_pipelined(sock: socket.socket, count: int) -> int:
    buf = bytearray()
    t0 = time.perf_counter_ns()
    sock.sendall(SSH_REQUEST * count)
    for _ in range(count):
        read_frame(sock, buf)
    return time.perf_counter_ns() - t0


def agent_pipelined(c: Client, names: list[str]) -> int:
    t0 = time.perf_counter_ns()
    c.get_many(names)
    return time.perf_counter_ns() - t0


def async_sequential(path: Path, n: int, use_uvloop: bool = False) -> list[int]:
    from client import AsyncClient

    async def run() -> list[int]:
        clock = time.perf_counter_ns
        out = []
        async with AsyncClient(path, autostart=False) as c:
            get = c.get
            for _ in range(n // 10):
                await get("bench0")
            for _ in range(n):
                t0 = clock()
                await get("bench0")
                out.append(clock() - t0)
        return out

    if use_uvloop:
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(run())
    return asyncio.run(run())


def process_time(argv: list[str], env: dict[str, str]) -> float:
    # cwd "/": `python -c` puts the working directory first on sys.path, and the code
    # measured is the one PYTHONPATH (or the venv) names
    t0 = time.perf_counter()
    subprocess.run(argv, env=env, check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, cwd="/")
    return time.perf_counter() - t0


KEYRING_SCRIPT = """
import json, sys, time
import keyring
keyring.set_password("credential-agent-bench", "u", sys.argv[2])
out = []
for _ in range(int(sys.argv[1])):
    t0 = time.perf_counter_ns()
    assert keyring.get_password("credential-agent-bench", "u") == sys.argv[2]
    out.append(time.perf_counter_ns() - t0)
print(json.dumps(out))
"""


SSH_CLIENT_SCRIPT = """
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
for _ in range(int(sys.argv[2])):
    s.sendall(b"\\x00\\x00\\x00\\x01\\x0b")
    data = s.recv(65536)
    while len(data) < 4 or len(data) < 4 + int.from_bytes(data[:4], "big"):
        data += s.recv(65536)
"""
AGENT_CLIENT_SCRIPT = """
import sys
import client
c = client.Client(sys.argv[1], autostart=False)
for _ in range(int(sys.argv[2])):
    c.get("bench0")
"""


def strace_counts(argv: list[str], env: dict[str, str], attach: int | None = None) -> dict[str, int] | str:
    """Syscall counts of running ``argv`` (or, with ``attach``, of process ``attach``
    while ``argv`` runs); a string says why there are none."""
    if shutil.which("strace") is None:
        return "strace is not installed"
    with tempfile.NamedTemporaryFile("r", suffix=".strace") as out:
        if attach is None:
            done = subprocess.run(["strace", "-f", "-c", "-o", out.name, *argv], env=env,
                                  capture_output=True, text=True, timeout=300, cwd="/")
            if done.returncode != 0:
                return f"strace failed: {done.stderr.strip()[-200:]}"
        else:
            tracer = subprocess.Popen(["strace", "-f", "-c", "-o", out.name, "-p", str(attach)],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            time.sleep(0.5)  # attached (strace says nothing until then; a little more is harmless)
            if tracer.poll() is not None:
                return "strace could not attach (ptrace refused: the agent is not dumpable unless root)"
            subprocess.run(argv, env=env, check=True, timeout=300, cwd="/")
            tracer.send_signal(2)
            tracer.wait(30)
        counts: dict[str, int] = {}
        for line in out.read().splitlines():
            parts = line.split()
            if len(parts) >= 5 and parts[-1].isidentifier() and parts[-1] != "total" and parts[3].isdigit():
                counts[parts[-1]] = int(parts[3])
        return counts


def per_request(small: dict[str, int] | str, big: dict[str, int] | str, n: int) -> tuple[float, str] | str:
    """Syscalls per request from two counts N requests apart, and the calls that make it up."""
    if isinstance(small, str):
        return small
    if isinstance(big, str):
        return big
    diff = {k: (big.get(k, 0) - small.get(k, 0)) / n for k in set(small) | set(big)}
    shown = {k: v for k, v in sorted(diff.items(), key=lambda kv: -kv[1]) if v >= 0.05}
    return sum(shown.values()), ", ".join(f"{k} {v:.2g}" for k, v in shown.items())


class Bench:
    def __init__(self, d: Daemons, quick: bool) -> None:
        self.d = d
        self.quick = quick
        self.c = d.client()
        self.blocks = 4 if quick else 40
        self.block_n = 100 if quick else 500
        self.conn_iters = 5 if quick else 300
        self.pipe_batches = 5 if quick else 200
        self.async_n = 200 if quick else 5000
        self.proc_n = 1 if quick else 5
        self.cli_n = 2 if quick else 15
        self.keyring_n = 5 if quick else 40
        self.strace_n = 200 if quick else 2000
        self.ssh = connect(d.ssh_sock)
        self.rows: dict[str, Row] = {}
        self.ss: SecretService | None = None
        self.ss_error: str | None = None
        self.notes: list[str] = []

    def row(self, key: str, *args: Any, **kw: Any) -> Row:
        if key not in self.rows:
            self.rows[key] = Row(*args, **kw)
        return self.rows[key]

    def setup(self) -> None:
        self.c.init("passphrase", PASSPHRASE)
        self.c.call_many([("store", {"platform": n, "value": VALUE, "validate": False}) for n in NAMES])
        self.loop = self.c.status().get("loop", "?")
        agent_block(self.c, 2000)
        ssh_block(self.ssh, 2000)
        gc.collect()
        time.sleep(0.5)
        assert self.d.agent is not None and self.d.ssh is not None
        self.idle_rss = (rss_kib(self.d.agent.pid), rss_kib(self.d.ssh.pid))
        self.frame = protocol.encode_request("get", {"platform": "bench0"})
        try:
            self.ss = SecretService().start()
            self.ss.check()
            subprocess.run(["secret-tool", "store", "--label=bench", "service", "credential-agent-bench", "user", "u"],
                           input=VALUE, text=True, env={**self.d.env, **self.ss.env}, check=True, timeout=30,
                           capture_output=True) if shutil.which("secret-tool") else None
        except (SecretServiceUnavailable, subprocess.SubprocessError) as e:
            self.ss_error = str(e)
            if self.ss is not None:
                self.ss.stop()
            self.ss = None

    def close(self) -> None:
        self.ssh.close()
        self.c.close()
        if self.ss is not None:
            self.ss.stop()

    # --- sequential rows: one connection each, short blocks, alternating ---------------------
    def sequential(self) -> None:
        assert self.d.agent is not None and self.d.ssh is not None
        apid, spid = self.d.agent.pid, self.d.ssh.pid
        p50 = self.row("p50", "cached get, p50", "us", "ssh-agent", "<= 1.5x", lambda r: r <= 1.5)
        p99 = self.row("p99", "cached get, p99", "us", "ssh-agent", "<= 1.8x", lambda r: r <= 1.8)
        a0, s0 = cpu_seconds(apid), cpu_seconds(spid)
        acpu = scpu = 0.0
        calls = 0
        for i in range(self.blocks):
            def agent_side() -> tuple[list[int], float]:
                c0 = cpu_seconds(apid)
                samples = agent_block(self.c, self.block_n)
                return samples, cpu_seconds(apid) - c0

            def ssh_side() -> tuple[list[int], float]:
                c0 = cpu_seconds(spid)
                samples = ssh_block(self.ssh, self.block_n)
                return samples, cpu_seconds(spid) - c0

            (a, ac), (s, sc) = both(agent_side, ssh_side, i % 2 == 1)
            acpu, scpu, calls = acpu + ac, scpu + sc, calls + self.block_n
            p50.add(pct(a, 0.5) / 1e3, pct(s, 0.5) / 1e3)
            p99.add(pct(a, 0.99) / 1e3, pct(s, 0.99) / 1e3)
        self.seq_rate = 1e9 / (statistics.median(p50.agent) * 1e3)
        del a0, s0
        cpu = self.row("cpu", "agent CPU per get (all blocks)", "us", "ssh-agent", "<= 1.3x", lambda r: r <= 1.3)
        if acpu > 0 and scpu > 0:
            cpu.add(acpu / calls * 1e6, scpu / calls * 1e6)

    # one round of the other rows; `flip` alternates which side goes first
    def round(self, flip: bool) -> None:
        # the 64 connections exist for this row only
        agent_conns = [connect(self.d.agent_sock) for _ in range(64)]
        ssh_conns = [connect(self.d.ssh_sock) for _ in range(64)]
        try:
            ar, sr = both(lambda: many_connections(agent_conns, self.frame, self.conn_iters),
                          lambda: many_connections(ssh_conns, SSH_REQUEST, self.conn_iters), flip)
        finally:
            for s in [*agent_conns, *ssh_conns]:
                s.close()
        self.row("conn64", "64 connections, throughput", "req/s", "ssh-agent", ">= 0.7x",
                 lambda r: r >= 0.7).add(ar, sr)

        def pipe_agent() -> float:
            return pct([agent_pipelined(self.c, NAMES) for _ in range(self.pipe_batches)], 0.5)

        def pipe_ssh() -> float:
            return pct([ssh_pipelined(self.ssh, 100) for _ in range(self.pipe_batches)], 0.5)

        at, st = both(pipe_agent, pipe_ssh, flip)
        arate, srate = 100 * 1e9 / at, 100 * 1e9 / st
        self.row("pipe", "100 pipelined on 1 connection", "req/s", "ssh-agent", ">= 0.55x",
                 lambda r: r >= 0.55).add(arate, srate)
        self.row("pipe_self", "100 pipelined vs own sequential", "req/s", "agent sequential", ">= 3x",
                 lambda r: r >= 3).add(arate, self.seq_rate)

        aa, ss = both(lambda: async_sequential(self.d.agent_sock, self.async_n),
                      lambda: ssh_block(self.ssh, self.async_n), flip)
        self.row("async", "AsyncClient get (asyncio loop), p50", "us", "ssh-agent", "<= 2.1x", lambda r: r <= 2.1).add(
            pct(aa, 0.5) / 1e3, pct(ss, 0.5) / 1e3)

        try:
            import uvloop  # noqa: F401
        except ImportError:
            self.row("async_uv", "AsyncClient get on uvloop, p50", "us", "ssh-agent", "info").skipped = \
                "uvloop is not installed"
        else:
            aa, ss = both(lambda: async_sequential(self.d.agent_sock, self.async_n, use_uvloop=True),
                          lambda: ssh_block(self.ssh, self.async_n), flip)
            self.row("async_uv", "AsyncClient get on uvloop, p50", "us", "ssh-agent", "info").add(
                pct(aa, 0.5) / 1e3, pct(ss, 0.5) / 1e3)

        self.process_round(flip)
        self.keyring_round(statistics.median(self.rows["p50"].agent) * 1e3)

    def process_round(self, flip: bool) -> None:
        # python -S, with site-packages on PYTHONPATH: .pth files of the local
        # installation (here one that imports certifi, +40 ms a start) would
        # otherwise weigh on every row and flatter the ratios
        env = self.d.env
        py = [sys.executable, "-S", "-c"]
        cmds = {
            "pass": [*py, "pass"],
            "keyring": [*py, "import keyring"],
            "import": [*py, "import client"],
            "import_cls": [*py, "from client import Client"],
            "get": [*py, "import client; client.Client(autostart=False).get('bench0')"],
        }
        if self.ss is not None:
            cmds["kr_get"] = [*py, "import keyring; keyring.get_password('credential-agent-bench', 'u')"]
        times: dict[str, list[float]] = {k: [] for k in cmds}
        order = list(cmds)
        for i in range(self.proc_n):
            for k in (order if (i % 2 == 0) != flip else order[::-1]):
                e = {**env, **self.ss.env} if k == "kr_get" and self.ss is not None else env
                times[k].append(process_time(cmds[k], e))
        med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
        self.row("proc_pass", "process: import client, get, exit", "ms", "python -c pass", "<= 2.2x",
                 lambda r: r <= 2.2).add(med["get"], med["pass"])
        self.row("proc_keyring", "process: import client, get, exit", "ms", "python -c 'import keyring'",
                 "<= 0.3x", lambda r: r <= 0.3).add(med["get"], med["keyring"])
        self.row("import", "process: import client", "ms", "python -c pass", "<= 2x",
                 lambda r: r <= 2).add(med["import"], med["pass"])
        self.row("import_cls", "process: from client import Client", "ms", "python -c pass", "info").add(
            med["import_cls"], med["pass"])
        if "kr_get" in med:
            self.row("proc_kr", "process: import client, get, exit", "ms", "same with keyring.get_password",
                     "info").add(med["get"], med["kr_get"])

    def keyring_round(self, agent_p50_ns: float) -> None:
        row = self.row("keyring", "keyring.get_password (Secret Service), p50", "us", "agent cached get p50",
                       "info")
        if self.ss is None:
            row.skipped = f"no Secret Service: {self.ss_error}"
            return
        done = subprocess.run([sys.executable, "-c", KEYRING_SCRIPT, str(self.keyring_n), VALUE],
                              env={**self.d.env, **self.ss.env}, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            row.skipped = f"keyring failed: {done.stderr.strip()[-200:]}"
            return
        samples = json.loads(done.stdout)
        row.add(pct(samples, 0.5) / 1e3, agent_p50_ns / 1e3)

    def memory(self) -> None:
        assert self.d.agent is not None
        pid = self.d.agent.pid
        arss, srss = self.idle_rss
        self.row("rss", "idle RSS", "MiB", "ssh-agent", "<= 6x", lambda r: r <= 6).add(arss / 1024, srss / 1024)
        n_conn = 20 if self.quick else 400
        gc.collect()
        time.sleep(0.2)
        before = rss_kib(pid)
        socks = [connect(self.d.agent_sock) for _ in range(n_conn)]
        hello = protocol.encode_request("hello")
        for s in socks:
            s.sendall(hello)
        for s in socks:
            read_frame(s, bytearray())
        time.sleep(0.2)
        per_conn = (rss_kib(pid) - before) / n_conn
        for s in socks:
            s.close()
        self.row("mem_conn", "memory per idle connection", "KiB", "", "<= 3 KiB", lambda r: r <= 3).add(
            per_conn, 1, per_conn)
        n_sec = 100 if self.quick else 2000

        def store_batch(prefix: str) -> None:
            for i in range(0, n_sec, 200):
                self.c.call_many([("store", {"platform": f"{prefix}{j}", "value": VALUE, "validate": False})
                                  for j in range(i, min(n_sec, i + 200))])
            # the audit log batches its rows for up to 1 s (agent.audit.FLUSH_INTERVAL)
            time.sleep(1.5)

        # a first batch brings the fixed-size caches to their size (SQLite's page cache,
        # bounded at 2 MiB; the audit batch); the second measures what each secret adds
        store_batch("warm")
        before = rss_kib(pid)
        store_batch("mem")
        per_secret = (rss_kib(pid) - before) * 1024 / n_sec
        self.row("mem_secret", "memory per stored secret", "B", "", "<= 1 KiB", lambda r: r <= 1024).add(
            per_secret, 1, per_secret)

    # --- syscalls per request, each side ----------------------------------------------------------
    def syscalls(self) -> None:
        assert self.d.agent is not None and self.d.ssh is not None
        env = self.d.env
        py = [sys.executable, "-S", "-c"]
        n = self.strace_n
        sides = {
            "client": ([*py, AGENT_CLIENT_SCRIPT, str(self.d.agent_sock)], None,
                       [*py, SSH_CLIENT_SCRIPT, str(self.d.ssh_sock)], None, "ssh-agent's client"),
            "daemon": ([*py, AGENT_CLIENT_SCRIPT, str(self.d.agent_sock)], self.d.agent.pid,
                       [*py, SSH_CLIENT_SCRIPT, str(self.d.ssh_sock)], self.d.ssh.pid, "ssh-agent"),
        }
        for side, (aargv, apid, sargv, spid, base_name) in sides.items():
            name = "syscalls per get, client process" if side == "client" else "syscalls per get, in the daemon"
            row = self.row(f"sys_{side}", name, "", base_name, "info")
            a = per_request(strace_counts([*aargv, str(n)], env, apid),
                            strace_counts([*aargv, str(2 * n)], env, apid), n)
            s = per_request(strace_counts([*sargv, str(n)], env, spid),
                            strace_counts([*sargv, str(2 * n)], env, spid), n)
            if isinstance(a, str) or isinstance(s, str):
                row.skipped = a if isinstance(a, str) else str(s)
                continue
            row.add(a[0], s[0])
            self.notes.append(f"syscalls per get, {side}: agent {a[0]:.2f} ({a[1]}); {base_name} {s[0]:.2f} ({s[1]})")

    # --- the agent command, as scripts and prompts run it ----------------------------------------
    def cli_rows(self, agent_cmd: list[str], python: list[str], env: dict[str, str], where: str) -> None:
        cmds = {
            "pass": [*python, "-c", "pass"],
            "get": [*agent_cmd, "get", "bench0"],
            "short": [*agent_cmd, "status", "--short"],
            "run": [*agent_cmd, "run", "--", "true"],
        }
        ss_env = {**env, **self.ss.env} if self.ss is not None else env
        if self.ss is not None and shutil.which("secret-tool"):
            cmds["secret_tool"] = ["secret-tool", "lookup", "service", "credential-agent-bench", "user", "u"]
        times: dict[str, list[float]] = {k: [] for k in cmds}
        failed: dict[str, str] = {}
        order = list(cmds)
        for i in range(self.cli_n):
            for k in order if i % 2 == 0 else order[::-1]:
                if k in failed:
                    continue
                try:
                    times[k].append(process_time(cmds[k], ss_env if k == "secret_tool" else env))
                except subprocess.CalledProcessError as e:  # e.g. an agent from before `status --short`
                    failed[k] = f"`{' '.join(cmds[k][-3:])}` exited with {e.returncode}"
        med = {k: statistics.median(v) * 1e3 for k, v in times.items() if v}
        for k, label in (("get", f"`agent get` ({where})"), ("short", f"`agent status --short` ({where})")):
            if k in failed:
                for b in ("st", "pass"):
                    self.row(f"{where}cli_{k}_{b}", label, "ms", "", "<= 3x" if b == "st" else "info").skipped = \
                        failed[k]
                continue
            limit = 2.5 if k == "get" else 3.0  # issue 25: `agent get` within 2.5x `secret-tool lookup`
            base = self.row(f"{where}cli_{k}_st", label, "ms", "secret-tool lookup", f"<= {limit:g}x",
                            lambda r, limit=limit: r <= limit)
            if "secret_tool" in med:
                base.add(med[k], med["secret_tool"])
            else:
                base.skipped = f"no secret-tool on a Secret Service: {self.ss_error or 'secret-tool is not installed'}"
            self.row(f"{where}cli_{k}_pass", label, "ms", "python -c pass", "info").add(med[k], med["pass"])
        run = self.row(f"{where}cli_run", f"`agent run -- true` ({where})", "ms", "`agent get`", "<= 1.2x",
                       lambda r: r <= 1.2)
        if "run" in failed or "get" in failed:
            run.skipped = failed.get("run") or failed["get"]
        else:
            run.add(med["run"], med["get"])

    # --- the autostart cold path: a first Client().get with no agent running --------------------
    def autostart_rows(self, python: list[str], agent_cmd: list[str], env_for: Callable[[Path], dict[str, str]],
                       where: str, preexec: Callable[[], None] | None = None) -> None:
        name = f"autostart: first `Client().get`, no agent running, keystore vault ({where})"
        rows = (
            self.row(f"{where}cold_get", name, "ms", "secret-tool lookup", "< 150 ms", lambda ms: ms < 150,
                     absolute=True),
            self.row(f"{where}cold_get_warm", name, "ms", "the same process, agent running", "info"),
            self.row(f"{where}cold_status", f"autostart: first `Client().status()`, locked passphrase vault ({where})",
                     "ms", "secret-tool lookup", "info"),
        )
        if self.ss is None or not shutil.which("secret-tool"):
            for r in rows:
                r.skipped = f"no secret-tool on a Secret Service: {self.ss_error or 'secret-tool is not installed'}"
            return
        try:
            t = autostart.measure(python, agent_cmd, env_for, self.ss.env, VALUE, PASSPHRASE, self.cli_n, preexec)
        except subprocess.SubprocessError as e:
            for r in rows:
                r.skipped = f"failed: {e}"
            return
        med = {k: statistics.median(v) * 1e3 for k, v in t.items()}
        rows[0].add(med["cold_get"], med["secret_tool"])
        rows[1].add(med["cold_get"], med["warm_get"])
        rows[2].add(med["cold_status"], med["secret_tool"])

    # --- a plain pip install, started by `agent start`, a client started normally ------------------
    def installed(self) -> None:
        keys = ("inst_p50", "inst_p99", "inst_rss")
        labels = ("cached get, p50", "cached get, p99", "idle RSS")
        venv = Path(tempfile.mkdtemp(prefix="cav-", dir="/tmp"))
        home = Path(tempfile.mkdtemp(prefix="cai-", dir="/tmp"))
        ssh: subprocess.Popen[bytes] | None = None
        env = {k: v for k, v in base_env(home).items() if k not in ("PYTHONPATH", "PYTHONDONTWRITEBYTECODE")}
        agent = [str(venv / "bin" / "agent")]
        try:
            try:
                subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300, capture_output=True)
                subprocess.run([str(venv / "bin" / "pip"), "install", "-q", str(ROOT)], check=True, timeout=900,
                               capture_output=True, preexec_fn=unpin)
            except (subprocess.SubprocessError, OSError) as e:
                for k, label, target in zip(keys, labels, ("<= 1.5x", "<= 1.8x", "<= 6x"), strict=True):
                    self.row(k, f"installed: {label}", "", "ssh-agent", target).skipped = f"pip install failed: {e}"
                return
            normal = ["setarch", platform.machine()] if shutil.which("setarch") else []  # ASLR as usual
            run = {"env": env, "check": True, "timeout": 120, "capture_output": True, "preexec_fn": unpin}
            subprocess.run([*normal, *agent, "start"], **run)  # type: ignore[call-overload]
            ssh_sock = home / "ssh.sock"
            ssh = subprocess.Popen([*normal, "ssh-agent", "-D", "-a", str(ssh_sock)], stdin=subprocess.DEVNULL,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=unpin)
            wait_for_socket(ssh_sock, ssh)
            pid = subprocess.run([str(venv / "bin" / "python"), "-I", "-c", "import client; print(client.Client("
                                  "autostart=False).status()['pid'])"], **{**run, "text": True}).stdout  # type: ignore[call-overload]
            time.sleep(0.5)
            self.row("inst_rss_fresh", "installed: RSS of an agent with no vault open yet (or locked)", "MiB",
                     "ssh-agent", "<= 6x", lambda r: r <= 6).add(rss_kib(int(pid)) / 1024, rss_kib(ssh.pid) / 1024)
            subprocess.run([*normal, *agent, "init", "--key-source", "passphrase"], input=PASSPHRASE.encode() + b"\n",
                           **run)  # type: ignore[call-overload]
            subprocess.run([*normal, *agent, "set", "bench0", "--no-validate"], input=VALUE.encode() + b"\n",
                           **run)  # type: ignore[call-overload]
            done = subprocess.run([*normal, str(venv / "bin" / "python"), "-I", str(ROOT / "benchmarks" /
                                   "installed_driver.py"), str(ssh_sock), str(self.blocks), str(self.block_n)],
                                  **{**run, "text": True})  # type: ignore[call-overload]
            out = json.loads(done.stdout)
            p50 = self.row("inst_p50", "installed: cached get, p50", "us", "ssh-agent", "<= 1.5x", lambda r: r <= 1.5)
            p99 = self.row("inst_p99", "installed: cached get, p99", "us", "ssh-agent", "<= 1.8x", lambda r: r <= 1.8)
            for a, s in out["blocks"]:
                p50.add(pct(a, 0.5) / 1e3, pct(s, 0.5) / 1e3)
                p99.add(pct(a, 0.99) / 1e3, pct(s, 0.99) / 1e3)
            self.notes.append(f"installed agent: `agent start` of a plain pip install, loop {out['loop']}")
            time.sleep(0.5)
            self.row("inst_rss", "installed: idle RSS", "MiB", "ssh-agent", "<= 6x", lambda r: r <= 6).add(
                rss_kib(out["pid"]) / 1024, rss_kib(ssh.pid) / 1024)
            self.cli_rows(agent, [str(venv / "bin" / "python")], env, "plain pip install")
            self.autostart_rows([str(venv / "bin" / "python")], agent, lambda h: {
                k: v for k, v in base_env(h).items() if k not in ("PYTHONPATH", "PYTHONDONTWRITEBYTECODE")},
                "plain pip install", unpin)
        finally:
            if Path(agent[0]).exists():
                subprocess.run([*agent, "stop"], env=env, capture_output=True, timeout=60, check=False)
            if ssh is not None:
                ssh.terminate()
                ssh.wait(10)
            shutil.rmtree(venv, ignore_errors=True)
            shutil.rmtree(home, ignore_errors=True)


def both(agent: Callable[[], Any], base: Callable[[], Any], flip: bool) -> tuple[Any, Any]:
    if flip:
        b = base()
        return agent(), b
    a = agent()
    return a, base()


# --- report -------------------------------------------------------------------------------------
def machine() -> str:
    model = "?"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{os.cpu_count()} CPUs ({model}), {platform.system()} {platform.release()}"


def load() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def fmt(x: float) -> str:
    if x >= 1000:
        return f"{x:,.0f}"
    if x >= 100:
        return f"{x:.0f}"
    if x >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def report(rows: list[Row], header: list[str]) -> str:
    lines = [*header, "",
             "| measurement | agent | baseline | ratio (median of blocks/rounds) | spread (p10-p90) | target | met |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        if not r.skipped and not r.ratios:
            r.skipped = "too few requests to measure against the 10 ms CPU clock tick"
        if r.skipped:
            lines.append(f"| {r.name} | skipped | | | | {r.target} | {r.skipped} |")
            continue
        ratio = statistics.median(r.ratios)
        agent = f"{fmt(statistics.median(r.agent))} {r.unit}"
        if r.baseline_name:
            base = f"{fmt(statistics.median(r.base))} {r.unit} ({r.baseline_name})"
            shown = f"{ratio:.2f}x"
        else:
            base, shown = "", agent
        judged = statistics.median(r.agent) if r.absolute else ratio
        met = "" if r.check is None else ("yes" if r.check(judged) else "**no**")
        lines.append(f"| {r.name} | {agent} | {base} | {shown} | {r.spread()} | {r.target} | {met} |")
    return "\n".join(lines)


CHECKOUT = "this checkout, python -S"
INSTALLED = "plain pip install"
ORDER = ["p50", "p99", "cpu", "sys_client", "sys_daemon", "conn64", "pipe", "pipe_self", "async", "async_uv",
         "proc_pass", "proc_keyring", "import", "import_cls", "keyring", "proc_kr",
         *(f"{w}cli_{k}_{b}" for w in (CHECKOUT, INSTALLED) for k in ("get", "short") for b in ("st", "pass")),
         *(f"{w}{k}" for w in (CHECKOUT, INSTALLED) for k in ("cli_run", "cold_get", "cold_get_warm", "cold_status")),
         "rss", "mem_secret", "mem_conn", "inst_p50", "inst_p99", "inst_rss", "inst_rss_fresh"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--rounds", type=int, default=None, help="rounds per row (default 7; 1 with --quick)")
    ap.add_argument("--quick", action="store_true", help="tiny counts: checks every row runs, measures little")
    ap.add_argument("--no-install", action="store_true",
                    help="skip the plain-pip-install section (a venv and a download; skipped with --quick)")
    args = ap.parse_args(argv)
    if os.environ.get(PINNED) is None and (pin_prefix() or norandom_prefix()):
        os.environ[PINNED] = "1"
        cmd = [*pin_prefix(), *norandom_prefix(), sys.executable, os.path.abspath(__file__), *sys.argv[1:]]
        os.execvp(cmd[0], cmd)
    if shutil.which("ssh-agent") is None:
        print("ssh-agent is not installed (Debian: openssh-client); it is the baseline", file=sys.stderr)
        return 2
    rounds = args.rounds or (1 if args.quick else 7)
    load_before = load()
    started = time.monotonic()
    with Daemons.running() as d:
        b = Bench(d, args.quick)
        try:
            b.setup()
            b.sequential()  # first: one connection to each daemon, nothing else open
            print(f"sequential blocks done ({time.monotonic() - started:.0f} s, load {load()})",
                  file=sys.stderr, flush=True)
            for i in range(rounds):
                b.round(flip=i % 2 == 1)
                print(f"round {i + 1}/{rounds} done ({time.monotonic() - started:.0f} s, load {load()})",
                      file=sys.stderr, flush=True)
            b.syscalls()
            b.cli_rows([sys.executable, "-S", "-m", "agent"], [sys.executable, "-S"], d.env, CHECKOUT)
            b.autostart_rows([sys.executable, "-S"], [sys.executable, "-S", "-m", "agent"], checkout_env, CHECKOUT)
            b.memory()
            if args.quick or args.no_install:
                for k, label, target in (("inst_p50", "cached get, p50", "<= 1.5x"),
                                         ("inst_p99", "cached get, p99", "<= 1.8x"), ("inst_rss", "idle RSS", "<= 6x")):
                    b.row(k, f"installed: {label}", "", "ssh-agent", target).skipped = \
                        "the plain-pip-install section runs without --quick and --no-install"
            else:
                b.installed()
        finally:
            b.close()
    pinned = "pinned to CPU 0 (taskset -c 0), ASLR off (setarch -R)" if os.environ.get(PINNED) else "NOT pinned"
    header = [
        f"credential-agent vs OpenSSH ssh-agent, {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}",
        f"machine: {machine()}; Python {platform.python_version()}, agent loop {b.loop}",
        f"method: sequential rows in {b.blocks} alternating blocks of {b.block_n} gets with no other connection "
        f"open, the rest in {rounds} interleaved rounds; {pinned}; the agent and the process rows run python -S "
        f"with site-packages on PYTHONPATH; the installed rows are neither pinned nor ASLR-off",
        f"load average (1/5/15 min): {load_before} before, {load()} after; run took "
        f"{time.monotonic() - started:.0f} s",
    ]
    print(report([b.rows[k] for k in ORDER if k in b.rows], header))
    if b.notes:
        print("\n" + "\n".join(f"- {n}" for n in b.notes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
