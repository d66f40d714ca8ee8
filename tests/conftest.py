from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# this checkout's packages and test support come first, whatever else is installed
sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parent.parent)]

from support import TRANSPORT, AgentProcess, SecretService, SecretServiceUnavailable  # noqa: E402 - after sys.path

# The modules a Windows run collects. The others test POSIX things (Unix sockets and
# their modes, signals, fork, /proc, systemd, flock) and import POSIX-only modules, so
# a Windows run leaves them out; pytest's header says so.
WINDOWS_MODULES = frozenset({
    "test_pipe.py", "test_platforms.py", "test_protocol.py", "test_validation.py", "test_validation_paths.py",
    "test_client_contract.py", "test_key_source_contract.py",
})


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    if sys.platform == "win32" and collection_path.suffix == ".py" and collection_path.name.startswith("test_"):
        return collection_path.name not in WINDOWS_MODULES
    return None


def pytest_report_header(config: pytest.Config) -> str:
    line = f"credential-agent: agents listen on {TRANSPORT}"
    if sys.platform == "win32":
        line += f"; Windows run: only {', '.join(sorted(WINDOWS_MODULES))} (the rest test POSIX-only code)"
    return line


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """In-process code (clients, paths) never sees the developer's real agent or keystore."""
    for var in list(os.environ):
        if var.startswith("CREDENTIAL_AGENT_"):
            monkeypatch.delenv(var)
    monkeypatch.setenv("CREDENTIAL_AGENT_NO_AUTOSTART", "1")
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "keyring.backends.fail.Keyring")


@pytest.fixture
def agent() -> Iterator[AgentProcess]:
    """A running agent with no vault yet."""
    a = AgentProcess().start()
    yield a
    a.cleanup()


@pytest.fixture
def unlocked_agent(agent: AgentProcess) -> AgentProcess:
    """A running agent with a passphrase vault, unlocked."""
    agent.init_passphrase()
    return agent


@pytest.fixture(scope="session")
def secret_service() -> Iterator[SecretService]:
    """A real Secret Service (gnome-keyring on a private D-Bus bus) for this session.

    Skipped with the reason where it cannot run; with CA_TEST_REQUIRE_SECRET_SERVICE=1
    (set by the test script in CI) a failure to start is an error, not a skip.
    """
    if not sys.platform.startswith("linux"):
        pytest.skip("the Secret Service suite runs on Linux; macOS Keychain / Windows Credential Manager are "
                    "not available on this machine")
    ss = SecretService()
    try:
        ss.start()
        ss.check()
    except SecretServiceUnavailable as e:
        ss.stop()
        if os.environ.get("CA_TEST_REQUIRE_SECRET_SERVICE") == "1":
            pytest.fail(f"a real Secret Service is required here but could not start: {e}")
        pytest.skip(f"no real Secret Service here: {e}")
    yield ss
    ss.stop()


@pytest.fixture
def keyring_agent(secret_service: SecretService) -> Iterator[AgentProcess]:
    """A running agent whose keyring calls reach the real Secret Service."""
    a = AgentProcess(env=secret_service.env).start()
    yield a
    a.cleanup()
