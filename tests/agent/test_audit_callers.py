"""The audit log tells Python callers apart (their script or module, never their
arguments) and records what `agent exec` / `agent run` started, against a real agent
and real caller processes."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

from agent.stores.sqlite import SCHEMA_VERSION
from agent.transport.callers import from_argv
from support import AgentProcess

RP = "rp_" + "CallerCanary" * 2
ARG_CANARY = "ArgCanary_5e1f0c"  # an argument of the script: never recorded
GET = "import sys\nfrom client import Client\nwith Client() as c:\n    c.get('runpod')\n"


def test_the_script_or_module_from_a_python_command_line() -> None:
    py = "/usr/bin/python3.11"
    cases = {
        (py, "train.py", "--lr", "3e-4"): "train.py",
        (py, "-u", "-X", "dev", "-W", "error", "/srv/train.py", "-m", "x"): "/srv/train.py",
        (py, "-Wdefault", "-Xfrozen_modules=off", "-I", "job.py"): "job.py",
        (py, "-m", "sweeps.agent", "--token", "t"): "-m sweeps.agent",
        (py, "-um", "sweeps.agent"): "-m sweeps.agent",
        (py, "-msweeps.agent"): "-m sweeps.agent",
        (py, "-c", "import os; print('secret')", "x"): "-c",
        (py, "-Bc", "code"): "-c",
        (py, "-", "arg"): "-",
        (py, "--check-hash-based-pycs", "always", "s.py"): "s.py",
        (py, "--", "-weird.py"): "-weird.py",
        (py, "-i"): None,
        (py,): None,
    }
    for argv, expected in cases.items():
        assert from_argv(list(argv)) == expected, argv


def audit(a: AgentProcess, *args: str) -> list[dict]:
    done = a.cli("audit", "--json", *args)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def run_caller(a: AgentProcess, argv: list[str], cwd: Path) -> None:
    env = {**a.env, "PYTHONPATH": f"{cwd}:{a.env['PYTHONPATH']}"}
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_python_callers_are_told_apart_by_script_and_module(unlocked_agent: AgentProcess) -> None:
    a = unlocked_agent
    with a.client() as c:
        c.store("runpod", RP)
    work = a.home / "work"
    work.mkdir()
    (work / "train.py").write_text(GET)
    (work / "sweep_worker.py").write_text(GET)
    run_caller(a, [sys.executable, "train.py", "--token", ARG_CANARY], work)  # a relative path
    run_caller(a, [sys.executable, "-u", "-m", "sweep_worker", ARG_CANARY], work)
    run_caller(a, [sys.executable, "-c", GET + f"# {ARG_CANARY}"], work)
    gets = [r for r in audit(a) if r["op"] == "get"]
    assert [r["caller"] for r in gets] == [str(work / "train.py"), "-m sweep_worker", "-c"]
    assert all(Path(r["exe"]).name.startswith("python") and r["command"] is None for r in gets)
    # --by: the script's path or its name, the module's name
    for by, caller in (("train.py", str(work / "train.py")), (str(work / "train.py"), str(work / "train.py")),
                       ("sweep_worker", "-m sweep_worker"), ("-m sweep_worker", "-m sweep_worker")):
        assert [r["caller"] for r in audit(a, "--by", by) if r["op"] == "get"] == [caller], by
    assert audit(a, "--by", "nothing-ran-this") == []
    table = a.cli("audit", "--by", "train.py")
    assert table.returncode == 0 and f"{work / 'train.py'}" in table.stdout and "sweep_worker" not in table.stdout
    # arguments never reach the log, the table or the vault
    everything = a.cli("audit").stdout + json.dumps(audit(a))
    db = sqlite3.connect(a.home / "data" / "credential-agent" / "vault.sqlite3")
    dump = "\n".join(db.iterdump())
    db.close()
    assert ARG_CANARY not in everything + dump and RP not in everything + dump


def test_exec_and_run_record_the_command_they_started(unlocked_agent: AgentProcess) -> None:
    a = unlocked_agent
    with a.client() as c:
        c.store("runpod", RP)
    env_file = a.home / "e.env"
    env_file.write_text("RUNPOD_API_KEY=agent://runpod\n")
    assert a.cli("exec", "--platform", "runpod", "--", "true", ARG_CANARY).returncode == 0
    assert a.cli("run", "--env-file", str(env_file), "--", "env", "true").returncode == 0
    gets = [r for r in audit(a) if r["op"] == "get"]
    assert [r["command"] for r in gets] == ["true", "env"]
    assert all(r["caller"] == "-m agent" for r in gets)  # the tests run the CLI as `python -m agent`
    assert [r["command"] for r in audit(a, "--by", "true")] == ["true"]
    table = a.cli("audit", "--by", "env")
    assert "-> env" in table.stdout and "-> true" not in table.stdout and ARG_CANARY not in table.stdout


def test_a_vault_of_the_old_schema_gains_the_columns_and_keeps_its_log(unlocked_agent: AgentProcess) -> None:
    a = unlocked_agent
    with a.client() as c:
        c.store("runpod", RP)
        c.get("runpod")
    a.stop()
    vault = a.home / "data" / "credential-agent" / "vault.sqlite3"
    db = sqlite3.connect(vault)
    db.executescript("ALTER TABLE audit DROP COLUMN caller; ALTER TABLE audit DROP COLUMN command; "
                     "PRAGMA user_version = 0;")  # what a vault made before the columns looks like
    db.close()
    a.start()
    assert a.cli("unlock", input="correct horse battery staple\n").returncode == 0
    with a.client() as c:
        c.get("runpod")
    gets = [r for r in audit(a) if r["op"] == "get"]
    assert len(gets) == 2 and gets[0]["caller"] is None and gets[1]["caller"] is not None
    db = sqlite3.connect(vault)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    db.close()


def test_a_callers_path_with_terminal_escapes_is_shown_escaped(unlocked_agent: AgentProcess) -> None:
    """A script named to repaint the screen (an ESC sequence in its path) is shown as text."""
    a = unlocked_agent
    with a.client() as c:
        c.store("runpod", RP)
    work = a.home / "work\x1b[2J\x1b]0;owned\x07"
    work.mkdir()
    (work / "train.py").write_text(GET)
    run_caller(a, [sys.executable, "train.py"], work)
    table = a.cli("audit")
    assert table.returncode == 0
    assert "\x1b" not in table.stdout and "\x07" not in table.stdout
    assert "work\\x1b[2J\\x1b]0;owned\\x07/train.py" in table.stdout
