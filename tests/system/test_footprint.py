"""What the agent's pieces carry: building the CLI's parser and running ``agent get``
or ``agent status --short`` loads argparse and the client, nothing heavy;
``agent status --short`` gives a shell prompt one line without starting an agent;
a locked agent has not loaded cryptography."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from support import PASSPHRASE, ROOT, AgentProcess, base_env, short_tmpdir

# what no `agent get` needs: each one is milliseconds of import (or a whole side of
# the project) that a command module would otherwise load at its top
HEAVY = [
    "subprocess", "json", "inspect", "dataclasses", "typing", "pathlib", "shutil", "tempfile", "logging",
    "hashlib", "getpass", "tomllib", "asyncio", "ssl", "sqlite3", "threading", "keyring", "cryptography",
    "platformdirs", "uvloop", "agent.service_units", "agent.audit", "agent.daemon", "agent.state",
    "client.migrate", "client._sources", "client.service", "client.keyring_names", "client.spawn",
    "client._autostart", "client.aio",
]

PROBE = """
import sys
before = set(sys.modules)
import agent.cli
parser = agent.cli.build_parser()
for argv in (["get", "huggingface"], ["get", "runpod", "--type", "api-secret"], ["status", "--short"]):
    parser.parse_args(argv)
from client import Client
Client(sys.argv[1], autostart=False)
print("\\n".join(sorted(set(sys.modules) - before)))
"""


def _light_env() -> dict[str, str]:
    # python -S: no .pth file of this machine's site-packages imports anything first
    paths = sysconfig.get_paths()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CREDENTIAL_AGENT_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), paths["purelib"], paths["platlib"]])
    return env


def test_building_the_parser_and_parsing_get_loads_nothing_heavy() -> None:
    done = subprocess.run([sys.executable, "-S", "-c", PROBE, "/nonexistent/agent.sock"], env=_light_env(),
                          capture_output=True, text=True, timeout=60, cwd="/")
    assert done.returncode == 0, done.stderr
    loaded = set(done.stdout.split())
    assert "agent.cli" in loaded and "client.sync" in loaded  # the probe ran
    assert sorted(loaded & set(HEAVY)) == []


@pytest.mark.parametrize("argv", [
    ["get", "huggingface"], ["get", "HuggingFace"], ["get", "hf"], ["get", "runpod", "--type", "api-secret"],
    ["status", "--short"], *([["serve", "--detach"]] if sys.platform != "win32" else []),
])
def test_the_plain_forms_parse_as_argparse_parses_them(argv: list[str]) -> None:
    from agent import cli

    fast = cli.plain_args(argv)
    assert fast is not None, argv
    assert vars(fast) == vars(cli.build_parser().parse_args(argv))


PLAIN_PROBE = """
import sys
before = set(sys.modules)
import agent.cli
assert agent.cli.plain_args(sys.argv[1:]) is not None
print("\\n".join(sorted(set(sys.modules) - before)))
"""


@pytest.mark.parametrize(("argv", "own"), [
    (["get", "huggingface"], {"agent.cli.credentials", "agent.cli.removal"}),  # one group: set, get, rm, mv
    (["status", "--short"], {"agent.cli.control"}),
])
def test_a_plain_form_imports_its_own_command_modules_alone(argv: list[str], own: set[str]) -> None:
    done = subprocess.run([sys.executable, "-S", "-c", PLAIN_PROBE, *argv], env=_light_env(),
                          capture_output=True, text=True, timeout=60, cwd="/")
    assert done.returncode == 0, done.stderr
    shared = {"agent.cli._common", "agent.cli.versions"}  # what every command uses
    commands = {m for m in done.stdout.split() if m.startswith("agent.cli.") and m not in shared}
    assert commands <= own


def _commands(parser: object) -> dict[str, object]:
    import argparse

    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]  # type: ignore[attr-defined]
    return dict(sub.choices)


def test_a_named_command_is_parsed_by_its_group_alone_as_by_the_whole_parser() -> None:
    from agent import cli

    whole = _commands(cli.build_parser())
    assert sorted(cli.GROUPS) == sorted(whole)  # every command has its group, and no other name
    for name, group in cli.GROUPS.items():
        alone = _commands(cli.build_parser(name))
        assert name in alone, (name, group)
        assert alone[name].format_help() == whole[name].format_help(), name  # type: ignore[attr-defined]
    # a group registers only its own commands (what makes the parse cheap)
    assert sorted(_commands(cli.build_parser("run"))) == ["run"]


def test_run_and_exec_build_no_other_command() -> None:
    probe = ("import sys\nbefore = set(sys.modules)\nimport agent.cli\nagent.cli.build_parser('run')\n"
             "print('\\n'.join(sorted(set(sys.modules) - before)))")
    done = subprocess.run([sys.executable, "-S", "-c", probe], env=_light_env(), capture_output=True, text=True,
                          timeout=60, cwd="/")
    assert done.returncode == 0, done.stderr
    shared = {"agent.cli._common", "agent.cli.versions", "agent.cli._env", "agent.cli.run"}
    assert {m for m in done.stdout.split() if m.startswith("agent.cli.")} <= shared


@pytest.mark.parametrize("argv", [
    ["get"], ["get", "a b"], ["get", "-h"], ["get", "x", "--type"], ["get", "x", "--typo", "y"],
    ["get", "x", "--type", "--json"], ["get", "--type", "t", "x"], ["status"], ["status", "--json"],
    ["status", "--short", "--json"], ["ls"], [],
])
def test_every_other_form_goes_to_argparse(argv: list[str]) -> None:
    from agent import cli

    assert cli.plain_args(argv) is None


def test_the_parser_names_the_service_managers_of_service_units() -> None:
    from agent import service_units
    from agent.cli import service

    assert service.MANAGERS == service_units.MANAGERS


def test_help_width_follows_columns() -> None:
    env = {**_light_env(), "COLUMNS": "200"}
    wide = subprocess.run([sys.executable, "-S", "-m", "agent", "set", "--help"], env=env,
                          capture_output=True, text=True, timeout=60)
    narrow = subprocess.run([sys.executable, "-S", "-m", "agent", "set", "--help"], env={**env, "COLUMNS": "50"},
                            capture_output=True, text=True, timeout=60)
    assert wide.returncode == narrow.returncode == 0
    assert max(map(len, narrow.stdout.splitlines())) <= 48 < max(map(len, wide.stdout.splitlines()))


# --- agent status --short ------------------------------------------------------------------
def test_status_short_without_an_agent_says_none_and_starts_none() -> None:
    home = short_tmpdir()
    try:
        env = base_env(home)
        env.pop("CREDENTIAL_AGENT_NO_AUTOSTART")  # autostart on: --short must still not start one
        done = subprocess.run([sys.executable, "-m", "agent", "status", "--short"], env=env,
                              capture_output=True, text=True, timeout=60)
        assert (done.stdout, done.stderr, done.returncode) == ("none\n", "", 4)
        assert not Path(env["CREDENTIAL_AGENT_SOCK"]).exists()
        assert not (home / "data" / "credential-agent").exists()
    finally:
        subprocess.run(["rm", "-rf", str(home)], check=False)


def test_status_short_follows_the_lock_state(agent: AgentProcess) -> None:
    def short() -> tuple[str, int]:
        done = agent.cli("status", "--short")
        assert done.stderr == ""
        return done.stdout, done.returncode

    assert short() == ("uninitialized\n", 0)
    agent.init_passphrase()
    assert short() == ("unlocked 0\n", 0)
    with agent.client() as c:
        c.store("huggingface", "hf_" + "a" * 34)
        c.store("runpod", "rp_" + "b" * 30)
        assert short() == ("unlocked 2\n", 0)
        c.lock()
        assert short() == ("locked\n", 0)
        c.unlock(PASSPHRASE)
    assert short() == ("unlocked 2\n", 0)
    # the long form still says the same
    assert json.loads(agent.cli("status", "--json").stdout)["credentials"] == 2


def test_status_short_and_json_do_not_mix(agent: AgentProcess) -> None:
    done = agent.cli("status", "--short", "--json")
    assert done.returncode == 2 and "not allowed with" in done.stderr


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs a socket another uid could own (Linux)")
def test_status_short_refuses_a_socket_others_may_use(agent: AgentProcess) -> None:
    os.chmod(agent.socket, 0o666)
    try:
        done = agent.cli("status", "--short")
        assert (done.stdout, done.returncode) == ("refused\n", 1)
    finally:
        os.chmod(agent.socket, 0o600)


# --- the agent's own floor -------------------------------------------------------------------
def _maps_cryptography(pid: int) -> bool:
    return "/cryptography/" in Path(f"/proc/{pid}/maps").read_text()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/PID/maps (Linux)")
def test_a_locked_agent_has_not_loaded_cryptography(agent: AgentProcess) -> None:
    assert not _maps_cryptography(agent.pid)  # no vault yet
    agent.init_passphrase()
    with agent.client() as c:
        c.store("runpod", "rp_" + "b" * 30)
    assert _maps_cryptography(agent.pid)  # the probe sees it once it is there
    agent.stop()
    agent.start()  # the same vault, locked: nothing needs a key until `unlock`
    with agent.client() as c:
        assert c.status()["locked"] and [e["platform"] for e in c.list()] == ["runpod"]
    assert not _maps_cryptography(agent.pid)


# --- the client's syscalls ---------------------------------------------------------------------
CLIENT_LOOP = """
import sys
import client
c = client.Client(sys.argv[1], autostart=False)
for _ in range(int(sys.argv[2])):
    c.get("runpod")
"""


def _syscalls(argv: list[str], env: dict[str, str], out: Path) -> dict[str, int]:
    # cwd "/": `python -c` puts the working directory first on sys.path
    subprocess.run(["strace", "-f", "-c", "-o", str(out), *argv], env=env, check=True, capture_output=True,
                   timeout=120, cwd="/")
    counts = {}
    for line in out.read_text().splitlines():
        parts = line.split()
        if len(parts) >= 5 and parts[-1].isidentifier() and parts[-1] != "total" and parts[3].isdigit():
            counts[parts[-1]] = int(parts[3])
    return counts


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed")
def test_a_get_is_one_send_and_one_receive(unlocked_agent: AgentProcess, tmp_path: Path) -> None:
    # no poll from a socket timeout, no getpid for fork safety: N more gets cost N sendto
    # and N recvfrom, and nothing else
    with unlocked_agent.client() as c:
        c.store("runpod", "rp_" + "b" * 30)
    env = {**_light_env(), "CREDENTIAL_AGENT_NO_AUTOSTART": "1"}
    argv = [sys.executable, "-S", "-c", CLIENT_LOOP, str(unlocked_agent.socket)]
    few = _syscalls([*argv, "10"], env, tmp_path / "few")
    many = _syscalls([*argv, "510"], env, tmp_path / "many")
    extra = {k: many.get(k, 0) - few.get(k, 0) for k in set(few) | set(many)}
    assert (extra.get("sendto"), extra.get("recvfrom")) == (500, 500), extra
    assert not any(extra.get(k) for k in ("poll", "ppoll", "select", "pselect6", "getpid")), extra
    assert sum(extra.values()) <= 1000 + 10, extra  # a stray brk or mmap at most, nothing per call


DETACH_PROBE = """
import sys
before = set(sys.modules)
from agent import config, daemon, detach, logfile
print("\\n".join(sorted(set(sys.modules) - before)))
"""


@pytest.mark.skipif(sys.platform == "win32", reason="serve --detach forks: POSIX only")
def test_autostarts_entry_loads_no_cli() -> None:
    """What a client's autostart runs (agent.detach, then the daemon it serves with) imports no
    command module, argparse or the CLI's parser: only what serving needs."""
    from client import spawn

    assert "from agent.detach import spawned" in " ".join(spawn.detach_command())
    done = subprocess.run([sys.executable, "-S", "-c", DETACH_PROBE], env=_light_env(), capture_output=True,
                          text=True, timeout=60, cwd="/")
    assert done.returncode == 0, done.stderr
    loaded = set(done.stdout.split())
    assert "agent.daemon" in loaded  # the probe ran
    assert sorted(m for m in loaded if m == "argparse" or m.startswith("agent.cli")) == []


GET_PROBE = """
import sys
from agent import entry
code = entry.main(sys.argv[1:])
print(sorted(m for m in sys.modules if m in ("argparse", "re", "enum", "client.config") or m.startswith("agent.cli")),
      file=sys.stderr)
sys.exit(code)
"""


def test_agent_get_runs_with_the_client_alone(unlocked_agent: AgentProcess) -> None:
    """`agent get NAME` (the console script's entry, agent.entry) reaches the agent without the
    CLI's package: no argparse, re or client.config (~8 ms of the process)."""
    with unlocked_agent.client() as c:
        c.store("huggingface", "hf_" + "g" * 34)
        c.store("runpod", "r" * 25, credential_type="api-secret")
    env = {**unlocked_agent.env, **{k: v for k, v in _light_env().items() if k == "PYTHONPATH"}}
    for argv, value in ((["get", "HF"], "hf_" + "g" * 34), (["get", "runpod", "--type", "api-secret"], "r" * 25)):
        done = subprocess.run([sys.executable, "-S", "-c", GET_PROBE, *argv], env=env, capture_output=True, text=True,
                              timeout=60, cwd="/", stdin=subprocess.DEVNULL)
        assert (done.returncode, done.stdout, done.stderr) == (0, value + "\n", "[]\n"), done
    # what it does not answer itself goes to the CLI, which says it as before
    done = subprocess.run([sys.executable, "-S", "-c", GET_PROBE, "get", "nothere"], env=env, capture_output=True,
                          text=True, timeout=60, cwd="/", stdin=subprocess.DEVNULL)
    assert done.returncode == 1 and done.stderr.startswith("agent: ") and "nothere" in done.stderr, done
    done = subprocess.run([sys.executable, "-S", "-c", GET_PROBE, "get", "bad name"], env=env, capture_output=True,
                          text=True, timeout=60, cwd="/", stdin=subprocess.DEVNULL)
    assert done.returncode == 2 and "invalid platform name" in done.stderr, done


@pytest.mark.parametrize("argv", [
    ["get", "huggingface"], ["get", "HF"], ["get", "hf"], ["get", "runpod", "--type", "api-secret"],
    ["get", "-h"], ["get", "x", "--type", "-h"], ["get", "keyring:pypi"], ["get", "x", "--type", "user:me"],
    ["get", "bad name"], ["get", "x" * 64], ["get", "x" * 65], ["get", "é"], ["get", "x", "--clip"], ["get"],
    ["ls"], ["get", "x", "--type"],
])
def test_the_entrys_get_takes_only_what_argparse_takes_the_same_way(argv: list[str]) -> None:
    from agent import cli, entry

    quick = entry.plain_get(argv)
    if quick is not None:
        args = cli.build_parser().parse_args(argv)
        assert quick == (args.platform, args.type) and not args.clip
