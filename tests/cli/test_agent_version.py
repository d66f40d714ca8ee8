"""An agent of another version than the command: an older one is replaced, a newer one is
left running with a warning. The other version is a real copy of the code with its
version changed, run as an agent process of its own."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

import agent as agent_package
from agent.cli import _common as versions
from support import PASSPHRASE, AgentProcess, until

ROOT = Path(__file__).resolve().parents[2]


def code_of_version(where: Path, version: str) -> Path:
    """A copy of the agent and client packages that says it is ``version``."""
    for package in ("agent", "client"):
        shutil.copytree(ROOT / package, where / package, ignore=shutil.ignore_patterns("__pycache__"))
    init = where / "agent" / "__init__.py"
    init.write_text(init.read_text().replace(f'__version__ = "{agent_package.__version__}"',
                                             f'__version__ = "{version}"'))
    assert f'"{version}"' in init.read_text()
    return where


@pytest.fixture(autouse=True)
def _elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # `python -m agent` puts the current directory first on sys.path: out of the checkout,
    # PYTHONPATH names the code a process runs (the copy, or the tests' own with "")
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def old_agent(tmp_path: Path) -> Iterator[AgentProcess]:
    code = code_of_version(tmp_path / "old", "0.0.1")
    a = AgentProcess(env={"PYTHONPATH": str(code)}).start()
    yield a
    a.cleanup()


def running_version(a: AgentProcess) -> str:
    with a.client() as c:
        return str(c.hello()["agent"])


def test_versions_compare_as_releases() -> None:
    assert versions.older("0.0.1", "0.1.0") and versions.older("0.9.9", "0.10.0")
    assert versions.older("1.2.0.dev3", "1.2.0") and not versions.older("1.2.0", "1.2.0rc1")
    assert versions.older("0.2.0", "0.1.0") is False and versions.older("garbage", "0.1.0") is None


def test_a_command_replaces_an_older_agent_and_says_what_to_do(old_agent: AgentProcess) -> None:
    a = old_agent
    a.init_passphrase()  # unlocked, with a passphrase: the replacement costs an unlock
    with a.client() as c:
        c.store("example", "kept-across")
    assert running_version(a) == "0.0.1"
    old_pid = a.pid
    ls = a.cli("ls", env={"PYTHONPATH": ""})
    assert ls.returncode == 0, ls.stderr
    assert "example" in ls.stdout
    assert ls.stderr.startswith(f"agent: replaced the running agent 0.0.1 (pid {old_pid}) with "
                                f"{agent_package.__version__}")
    assert "it was unlocked, so the vault is locked now: `agent unlock`" in ls.stderr
    assert a.proc is not None and a.proc.wait(timeout=10) == 0  # the old one exited cleanly
    assert running_version(a) == agent_package.__version__
    with a.client() as c:
        c.unlock(PASSPHRASE)
        assert c.get("example") == "kept-across"
    again = a.cli("ls", env={"PYTHONPATH": ""})
    assert again.returncode == 0 and again.stderr == ""  # replaced once, then quiet
    a.cli("stop")


def test_a_locked_older_agent_is_replaced_without_asking_for_an_unlock(old_agent: AgentProcess) -> None:
    a = old_agent
    status = a.cli("status", env={"PYTHONPATH": ""})  # status only looks
    assert status.returncode == 0 and "replaced" not in status.stderr
    assert (f"VERSION:     this command is {agent_package.__version__}: any other command replaces this older "
            "agent") in status.stdout
    assert running_version(a) == "0.0.1"
    init = a.cli("init", "--key-source", "passphrase", input=f"{PASSPHRASE}\n{PASSPHRASE}\n",
                 env={"PYTHONPATH": ""})
    assert "replaced the running agent 0.0.1" in init.stderr and "agent unlock" not in init.stderr
    assert init.returncode == 0, init.stderr
    assert running_version(a) == agent_package.__version__
    a.cli("stop")


def test_a_newer_agent_is_left_running_with_a_warning(tmp_path: Path) -> None:
    code = code_of_version(tmp_path / "new", "99.0.0")
    a = AgentProcess(env={"PYTHONPATH": str(code)}).start()
    try:
        ls = a.cli("ls", env={"PYTHONPATH": ""})
        assert ls.returncode == 0
        assert "the running agent is version 99.0.0, newer than this command" in ls.stderr
        assert a.proc is not None and a.proc.poll() is None
        until(lambda: running_version(a) == "99.0.0", 5, "the newer agent still serving")
    finally:
        a.cleanup()
