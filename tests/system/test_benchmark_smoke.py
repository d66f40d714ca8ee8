"""The benchmark command runs and prints every row (counts, not timings: no timed assertion)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import pytest

from support import ROOT

ROWS = [
    "cached get, p50",
    "cached get, p99",
    "agent CPU per get",
    "syscalls per get, client process",
    "syscalls per get, in the daemon",
    "64 connections, throughput",
    "100 pipelined on 1 connection",
    "100 pipelined vs own sequential",
    "AsyncClient get (asyncio loop), p50",
    "AsyncClient get on uvloop, p50",
    "process: import client, get, exit",
    "process: import client |",
    "process: from client import Client",
    "keyring.get_password (Secret Service), p50",
    "`agent get` (this checkout, python -S)",
    "`agent status --short` (this checkout, python -S)",
    "`agent run -- true` (this checkout, python -S)",
    "autostart: first `Client().get`, no agent running, keystore vault (this checkout, python -S)",
    "autostart: first `Client().status()`, locked passphrase vault (this checkout, python -S)",
    "idle RSS",
    "memory per stored secret",
    "memory per idle connection",
    "installed: cached get, p50",  # skipped with --quick, saying so
]


@pytest.mark.skipif(shutil.which("ssh-agent") is None,
                    reason="ssh-agent (openssh-client), the baseline, is not installed")
def test_quick_benchmark_prints_every_row() -> None:
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick"],
                          capture_output=True, text=True, timeout=180, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    for row in ROWS:
        assert row in out, row
    assert "ssh-agent" in out and "machine:" in out and "load average" in out
    # every measured row has a number and a ratio; a skipped row says why
    for line in out.splitlines():
        if line.startswith("| ") and "measurement" not in line:
            assert re.search(r"\d", line), line
            assert "skipped" in line or re.search(r"\d(\.\d+)? ?(x|B|KiB)\b", line), line


@pytest.mark.parametrize(("script", "rows"), [
    ("protocol_encoding.py", ["request get", "reply to get", "| packb |", "| shared |", "| head |"]),
    ("client_hot_path.py", ["| Client.get | wall time |", "| await AsyncClient.get | client CPU |"]),
])
def test_quick_client_benchmarks_print_their_rows(script: str, rows: list[str]) -> None:
    if script == "client_hot_path.py" and (shutil.which("git") is None or not (ROOT / ".git").exists()):
        pytest.skip("client_hot_path.py compares against a git revision; this is not a git checkout")
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--quick"],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    for row in rows:
        assert row in done.stdout, row
    assert re.search(r"\d\.\d{3}x", done.stdout)


def test_quick_scale_benchmark_prints_every_row() -> None:
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "scale.py"), "--quick"],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    for row in ("| import |", "| start to first answer |", "| get p99 |", "| agent ls --json |",
                "| export --include-values |", "| rotate-key |", "| RSS after lock |",
                "| store N secrets (one program) |", "| lookup p50 (a process) |", "| daemon RSS |"):
        assert row in done.stdout, row
    assert "failed" not in done.stdout
    assert re.search(r"\d\.\d{2}x", done.stdout)
