"""The agent's own log file is bounded: past log_max_bytes it starts anew and keeps one older file."""

from __future__ import annotations

import stat

from client import errors
from support import AgentProcess


def test_the_log_file_starts_anew_and_keeps_one_older_file() -> None:
    a = AgentProcess(env={"CREDENTIAL_AGENT_LOG_MAX_BYTES": "4000"})
    log_dir = a.home / "state" / "credential-agent" / "log"
    try:
        started = a.cli("start", "--log-level", "debug")
        assert started.returncode == 0, started.stderr
        a.init_passphrase()
        with a.client() as c:
            for i in range(400):  # each failed lookup is a debug line: ~20 KB of log in all
                try:
                    c.get(f"nothing-{i}")
                except errors.NotFound:
                    pass
            assert c.status()["initialized"]  # serving through every rollover
        files = sorted(p.name for p in log_dir.iterdir())
        assert files == ["agent.log", "agent.log.1"]
        for name in files:
            info = (log_dir / name).stat()
            assert info.st_size <= 4000 + 200, (name, info.st_size)
            assert stat.S_IMODE(info.st_mode) == 0o600
        assert "op get -> not_found" in (log_dir / "agent.log.1").read_text()
        assert a.cli("stop").returncode == 0
        assert "stopped" in (log_dir / "agent.log").read_text()  # the current file gets the last lines
    finally:
        a.cli("stop")
        a.cleanup()
