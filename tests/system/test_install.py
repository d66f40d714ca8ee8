"""scripts/install.sh as a user runs it, twice: a fresh install, then an upgrade over a
running, unlocked agent with a vault (in a copy of this checkout and a private HOME)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from support import PASSPHRASE, ROOT, short_tmpdir

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="install.sh is a POSIX shell script")


def test_an_install_over_a_running_agent_restarts_it_and_keeps_the_vault() -> None:
    work = short_tmpdir("ca-install-")
    repo, home = work / "repo", work / "home"
    home.mkdir()
    shutil.copytree(ROOT, repo, ignore=shutil.ignore_patterns(".git", ".venv*", "__pycache__", "*.egg-info", "build"))
    env = {"HOME": str(home), "PATH": os.environ["PATH"], "PYTHON": sys.executable}
    for key in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_CONFIG_FILE"):
        if key in os.environ:
            env[key] = os.environ[key]

    def run(*argv: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run(list(argv), cwd=repo, env=env, input=stdin, capture_output=True, text=True, timeout=600)

    agent = str(repo / ".venv" / "bin" / "agent")
    try:
        first = run("bash", "scripts/install.sh")
        assert first.returncode == 0, first.stderr
        assert "next: `agent init`" in first.stdout
        assert run(agent, "init", "--key-source", "passphrase", stdin=PASSPHRASE + "\n").returncode == 0
        assert run(agent, "set", "runpod", stdin="r" * 25 + "\n").returncode == 0
        old_pid = json.loads(run(agent, "status", "--json").stdout)["pid"]
        again = run("bash", "scripts/install.sh")
        assert again.returncode == 0, again.stderr
        assert "stopped the agent that ran before this install" in again.stdout
        assert "your vault is kept (1 credentials, key source passphrase)" in again.stdout
        assert "next: `agent unlock`" in again.stdout and "next: `agent init`" not in again.stdout
        assert json.loads(run(agent, "status", "--json").stdout)["pid"] != old_pid  # another process now
        assert run(agent, "unlock", stdin=PASSPHRASE + "\n").returncode == 0
        assert run(agent, "get", "runpod").stdout == "r" * 25 + "\n"
    finally:
        run(agent, "stop")
        shutil.rmtree(work, ignore_errors=True)
