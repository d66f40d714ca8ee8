"""Autostart on a keystore vault: a first request that needs the key starts an agent that
reads the key while it loads (agent.keys.early) and unlocks as it starts; any other first
request leaves the vault locked, as before.

Real processes against a real Secret Service (gnome-keyring on a private bus).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.keys import early
from client import protocol
from support import ROOT, SecretService, base_env, short_tmpdir

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="autostart forks (serve --detach): POSIX only")

VALUE = "hf_" + "k" * 37

FIRST = """
import asyncio, json, sys
from client import AsyncClient, Client, errors
how, op = sys.argv[1], sys.argv[2]
args = json.loads(sys.argv[3])
try:
    if how == "async":
        async def main():
            async with AsyncClient(timeout=30) as c:
                return await c.call(op, args)
        result = asyncio.run(main())
    else:
        with Client(timeout=30) as c:
            result = c.call(op, args)
    print(json.dumps(result))
except errors.AgentError as e:
    print(json.dumps({"error": e.code, "message": e.message}))
"""


def first(env: dict[str, str], op: str, args: dict[str, object] | None = None, how: str = "sync") -> object:
    import json

    done = subprocess.run(
        [sys.executable, "-c", FIRST, how, op, json.dumps(args or {})],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def agent(env: dict[str, str], *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent", *args], env=env, input=stdin, capture_output=True, text=True, timeout=60
    )


def log_of(home: Path) -> str:
    return "".join(p.read_text(errors="replace") for p in home.rglob("agent.log*"))


def status(env: dict[str, str]) -> dict[str, object]:
    result = first(env, "status")
    assert isinstance(result, dict)
    return result


def children(pid: int) -> list[str]:
    """The agent's child processes (a helper left behind would be one)."""
    out: list[str] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        out += (task / "children").read_text().split()
    return out


@pytest.fixture
def vault(secret_service: SecretService) -> Iterator[tuple[Path, dict[str, str]]]:
    """A keystore vault holding one key, its agent stopped; autostart on."""
    home = short_tmpdir()
    env = base_env(home, secret_service.env)
    env.pop("CREDENTIAL_AGENT_NO_AUTOSTART")
    try:
        assert agent(env, "init", "--key-source", "keyring").returncode == 0
        assert agent(env, "set", "hf", "--no-validate", stdin=VALUE + "\n").returncode == 0
        assert agent(env, "stop").returncode == 0
        yield home, env
    finally:
        agent(env, "stop")
        subprocess.run(["rm", "-rf", str(home)], check=False)


@pytest.mark.skipif(early.cpus() < 2, reason="one CPU here: the agent reads the key itself once it serves")
@pytest.mark.parametrize("how", ["sync", "async"])
def test_a_first_get_starts_an_agent_that_unlocks_as_it_starts(vault: tuple[Path, dict[str, str]], how: str) -> None:
    home, env = vault
    assert first(env, "get", {"platform": "hf"}, how) == VALUE
    deadline = time.monotonic() + 10  # the early unlock says so once done; the get may be answered first
    while "the key was read as the agent started" not in (log := log_of(home)) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert "the key was read as the agent started" in log
    state = status(env)
    assert state["locked"] is False
    # the helper that read the key is gone (reaped), not a child left behind
    assert children(int(state["pid"])) == []  # type: ignore[arg-type]
    master = subprocess.run(
        ["secret-tool", "search", "--all", "service", "credential-agent"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout
    secrets = [line.split(" = ", 1)[1] for line in master.splitlines() if line.startswith("secret = ")]
    assert secrets, "the vault's key is not in the Secret Service"
    for secret in secrets:
        assert secret not in log


def test_four_first_gets_at_once_meet_one_agent(vault: tuple[Path, dict[str, str]]) -> None:
    """Four agents start at once and one serves: every get has its value, whichever helper read
    the key (the others read nothing: agent.keys.early.alone)."""
    import json

    _, env = vault
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", FIRST, "sync", "get", json.dumps({"platform": "hf"})],
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    for run in runs:
        out, err = run.communicate(timeout=60)
        assert json.loads(out) == VALUE, err
    assert status(env)["locked"] is False


def test_a_first_status_leaves_the_vault_locked(vault: tuple[Path, dict[str, str]]) -> None:
    home, env = vault
    state = status(env)
    assert state["locked"] is True
    assert "unlocked" not in log_of(home).split("initialised a vault")[-1].split("stopped")[-1]
    assert children(int(state["pid"])) == []  # type: ignore[arg-type]
    assert first(env, "get", {"platform": "hf"}) == VALUE  # then a get unlocks it as before


def test_a_key_missing_from_the_keystore_is_said_as_before(
    vault: tuple[Path, dict[str, str]], secret_service: SecretService
) -> None:
    _, env = vault
    subprocess.run(["secret-tool", "clear", "service", "credential-agent"], env=env, check=True, timeout=30)
    result = first(env, "get", {"platform": "hf"})
    assert result == {
        "error": "keystore_unavailable",
        "message": "the master key of this vault is missing from the OS keystore; "
        "restore it there, or the vault cannot be opened",
    }
    assert status(env)["locked"] is True  # and it goes on serving


def test_each_op_a_client_starts_an_unlocking_agent_for_does_unlock_it(vault: tuple[Path, dict[str, str]]) -> None:
    """protocol.UNLOCKS: started without the hint (`agent start`), a keystore vault's agent is
    unlocked by each of these ops."""
    _, env = vault
    args: dict[str, dict[str, object]] = {
        "get": {"platform": "hf"},
        "metadata": {"platform": "hf"},
        "store": {"platform": "other", "value": "v" * 20, "validate": False},
        "update": {"platform": "hf", "value": VALUE, "validate": False},
        "unlock": {},
    }
    assert set(args) == protocol.UNLOCKS
    for op, op_args in args.items():
        assert agent(env, "start").returncode == 0
        assert status(env)["locked"] is True
        result = first(env, op, op_args)
        assert not (isinstance(result, dict) and "error" in result), (op, result)
        assert status(env)["locked"] is False, op
        assert agent(env, "stop").returncode == 0
        deadline = time.monotonic() + 10
        while os.path.exists(env["CREDENTIAL_AGENT_SOCK"]) and time.monotonic() < deadline:
            time.sleep(0.02)


def test_an_explicit_lock_as_the_agent_starts_holds(vault: tuple[Path, dict[str, str]]) -> None:
    """`agent lock` (or SIGUSR1) sent the moment an agent started for a get serves, while its
    helper may still be reading the key: the vault stays locked until an explicit unlock."""
    from client import Client, spawn

    _, env = vault
    done = subprocess.run(spawn.detach_command(unlock=True), env=env, cwd="/", capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    with Client(env["CREDENTIAL_AGENT_SOCK"], autostart=False, timeout=30) as c:
        c.lock()
        time.sleep(0.5)  # the early unlock, had it not yielded to the lock, is done by now
        state = c.status()
        assert state["locked"] is True, state
        assert children(int(state["pid"])) == []
        c.unlock()
        assert c.get("hf") == VALUE
