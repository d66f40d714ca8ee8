"""Autostart: clients and the CLI start an agent when none answers, exactly one.

Every test runs real processes in a private home; nothing reaches the user's agent.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from support import ROOT, base_env, short_tmpdir

# A first call from a fresh process, at a given moment: its agent's pid, or the error.
FIRST_CALL = """
import sys, time
from client import Client, errors
at = float(sys.argv[1])
time.sleep(max(0.0, at - time.time()))
try:
    with Client(timeout=30) as c:
        print(c.status()["pid"])
except errors.AgentError as e:
    print("ERROR", type(e).__name__, e.message)
"""


def agents_in(home: Path) -> list[int]:
    """Pids of `agent serve` processes whose HOME is ``home``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            environ = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"serve" in cmdline and any(b"agent" in part for part in cmdline) and f"HOME={home}".encode() in environ:
            found.append(int(entry))
    return found


@pytest.fixture
def home():
    h = short_tmpdir()
    yield h
    env = base_env(h)
    subprocess.run([sys.executable, "-m", "agent", "stop"], env=env, capture_output=True, timeout=30)
    for pid in agents_in(h):
        os.kill(pid, 9)
    subprocess.run(["rm", "-rf", str(h)], check=False)


def autostart_env(home: Path, **extra: str) -> dict[str, str]:
    env = base_env(home, extra)
    env.pop("CREDENTIAL_AGENT_NO_AUTOSTART")
    return env


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="counts agent processes through /proc (Linux)")
def test_eight_first_calls_at_once_meet_one_agent(home: Path) -> None:
    env = autostart_env(home)
    at = time.time() + 3.0  # every interpreter is up and waiting by then, even on a loaded machine
    procs = [
        subprocess.Popen([sys.executable, "-c", FIRST_CALL, str(at)], env=env, cwd=ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(8)
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    pids = {out.strip() for out, _ in outputs}
    assert all(p.returncode == 0 for p in procs), outputs
    assert len(pids) == 1, outputs  # all eight were served by the same agent
    (pid,) = pids
    assert pid.isdigit(), outputs
    # the losing `agent serve` processes have exited; one agent is left
    deadline = time.monotonic() + 15
    while len(agents_in(home)) > 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert agents_in(home) == [int(pid)]


def test_no_autostart_says_how_to_start_one(home: Path) -> None:
    env = base_env(home)  # CREDENTIAL_AGENT_NO_AUTOSTART=1
    done = subprocess.run([sys.executable, "-c", FIRST_CALL, "0"], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.stdout.startswith("ERROR AgentUnavailable"), done
    assert "`agent start`" in done.stdout and "autostart is off" in done.stdout
    assert agents_in(home) == [] if sys.platform.startswith("linux") else True
    assert not Path(env["CREDENTIAL_AGENT_SOCK"]).exists()


def test_config_file_can_turn_autostart_off(home: Path) -> None:
    env = autostart_env(home)
    config = home / "config" / "credential-agent" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text("autostart = false\n")
    done = subprocess.run([sys.executable, "-c", FIRST_CALL, "0"], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.stdout.startswith("ERROR AgentUnavailable"), done
    # the environment wins over the file
    done = subprocess.run([sys.executable, "-c", FIRST_CALL, "0"], env={**env, "CREDENTIAL_AGENT_NO_AUTOSTART": "0"},
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.stdout.strip().isdigit(), done


def test_cli_starts_an_agent_on_first_use(home: Path) -> None:
    env = autostart_env(home)
    done = subprocess.run([sys.executable, "-m", "agent", "ls"], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    # the vault does not exist yet; what matters is that an agent answered
    assert done.returncode != 4, done.stderr
    status = subprocess.run([sys.executable, "-m", "agent", "status", "--json"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert json.loads(status.stdout)["running"] is True


def test_cli_without_autostart_exits_4(home: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "agent", "ls"], env=base_env(home),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 4
    assert "agent start" in done.stderr


def test_async_client_starts_an_agent(home: Path) -> None:
    code = (
        "import asyncio\n"
        "from client import AsyncClient\n"
        "async def main():\n"
        "    async with AsyncClient(timeout=30) as c:\n"
        "        print((await c.status())['pid'])\n"
        "asyncio.run(main())\n"
    )
    done = subprocess.run([sys.executable, "-c", code], env=autostart_env(home), cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().isdigit()


DETACH_FORKS = pytest.mark.skipif(sys.platform == "win32", reason="serve --detach forks: POSIX only")


@DETACH_FORKS
def test_serve_detach_returns_once_its_agent_answers(home: Path) -> None:
    """What autostart runs: the command returns when its child serves, which is in a session of
    its own with its output in the log, so the caller's pipes are let go at once."""
    env = autostart_env(home)
    done = subprocess.run([sys.executable, "-m", "agent", "serve", "--detach"], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    # no retry, no wait: it answers now
    from client import Client

    with Client(env["CREDENTIAL_AGENT_SOCK"], autostart=False, timeout=10) as c:
        pid = c.status()["pid"]
    assert os.getsid(pid) == pid
    log = Path(os.readlink(f"/proc/{pid}/fd/2")) if sys.platform.startswith("linux") else None
    assert log is None or log.name == "agent.log"
    # a second one finds the vault taken, and returns once that agent answers
    again = subprocess.run([sys.executable, "-m", "agent", "serve", "--detach"], env=env, cwd=ROOT,
                           capture_output=True, text=True, timeout=60)
    assert again.returncode == 0, again.stderr
    assert agents_in(home) == [pid] if sys.platform.startswith("linux") else True


@DETACH_FORKS
def test_serve_detach_says_why_its_agent_did_not_start(home: Path) -> None:
    env = autostart_env(home)
    (home / "data").mkdir(mode=0o700, exist_ok=True)
    (home / "data" / "credential-agent").write_text("not a directory")  # the vault cannot be made
    done = subprocess.run([sys.executable, "-m", "agent", "serve", "--detach"], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done
    assert done.stderr.startswith("agent: the agent exited with status 1: "), done.stderr
    assert done.stderr.count("\n") == 1 and "see " in done.stderr
    probe = subprocess.run([sys.executable, "-c", FIRST_CALL, "0"], env=env, cwd=ROOT,
                           capture_output=True, text=True, timeout=60)
    assert probe.stdout.startswith("ERROR AgentUnavailable could not start a credential agent"), probe
    assert "the agent exited with status 1" in probe.stdout


@DETACH_FORKS
def test_autostarts_entry_says_what_serve_detach_says(home: Path) -> None:
    """A client's autostart enters the agent at agent.detach, not the CLI: the same agent, the
    same failures, in the same words and exit codes."""
    from client import spawn

    env = autostart_env(home)
    entry = subprocess.run([sys.executable, "-c", "from client import spawn; print(spawn.detach_command())"],
                           env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert "from agent.detach import spawned" in entry.stdout, entry
    config_file = home / "config" / "credential-agent" / "config.toml"
    config_file.parent.mkdir(parents=True)
    config_file.write_text("idle_timeout = 'soon'\n")  # the agent reads it after the fork: its child fails
    said = []
    for argv in ([sys.executable, "-m", "agent", "serve", "--detach"], spawn.detach_command()):
        done = subprocess.run(argv, env=env, cwd="/", capture_output=True, text=True, timeout=60)
        said.append((done.returncode, done.stderr))
    assert said[0] == said[1] and said[0][0] == 1, said
    assert said[0][1].startswith("agent: the agent exited with status 1: agent: ") and "idle_timeout" in said[0][1]
    config_file.unlink()
    done = subprocess.run(spawn.detach_command(), env=env, cwd="/", capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    from client import Client

    with Client(env["CREDENTIAL_AGENT_SOCK"], autostart=False, timeout=10) as c:
        assert os.getsid(c.status()["pid"]) == c.status()["pid"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the config file's absence is known without an "
                    "import on Linux only (client._profile.config_may_exist)")
def test_autostart_is_on_without_reading_a_config_file_that_is_not_there(home: Path) -> None:
    """The first call of a process that finds no agent: with no variable and no config file the
    answer is the default, decided without importing client.config (its re and pathlib)."""
    from client import _autostart, config

    assert config.KEYS["autostart"].env == _autostart.NO_AUTOSTART
    probe = ("import sys\nfrom client import _autostart\nprint(_autostart.enabled(), 'client.config' in sys.modules)\n"
             "from client import config\nprint(config.setting('autostart'))")
    env = autostart_env(home)
    done = subprocess.run([sys.executable, "-c", probe], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.stdout.split() == ["True", "False", "True"], done
    config_file = home / "config" / "credential-agent" / "config.toml"
    config_file.parent.mkdir(parents=True)
    config_file.write_text("autostart = false\n")
    done = subprocess.run([sys.executable, "-c", probe], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.stdout.split() == ["False", "True", "False"], done


SPAWNING_CLIENT = """
import os, sys
from client import Client, errors
kept = open(sys.argv[1], "w")  # a descriptor this process leaves inheritable, as C libraries may
os.set_inheritable(kept.fileno(), True)
os.chdir(sys.argv[2])
try:
    with Client(timeout=30) as c:
        print(c.status()["pid"], "subprocess" in sys.modules)
except errors.AgentError as e:
    print("ERROR", e.message)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the agent's descriptors and cwd in /proc")
def test_an_autostarted_agent_keeps_nothing_of_its_caller(home: Path) -> None:
    """Autostart spawns the agent with os.posix_spawn (no subprocess import): the new agent lets
    go of the caller's working directory and inheritable descriptors itself, and a failure to
    start is said as before."""
    env = autostart_env(home)
    work = home / "work"
    work.mkdir()
    marker = work / "held-by-the-caller"
    state = home / "state"
    state.mkdir(mode=0o777)
    state.chmod(0o777)  # the agent refuses to keep its log where other users may write
    argv = [sys.executable, "-c", SPAWNING_CLIENT, str(marker), str(work)]
    done = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.stdout.startswith("ERROR could not start a credential agent at "), done
    assert done.stdout.rstrip().endswith(f"lies in {state}, which other users may write (mode 0777)"), done
    state.chmod(0o700)
    done = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    pid, imported = done.stdout.split()
    assert imported == "False", "the client imported subprocess to start the agent"
    assert os.readlink(f"/proc/{pid}/cwd") == "/"
    held = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
    assert str(marker) not in held and not any(path.startswith(str(work)) for path in held), held
