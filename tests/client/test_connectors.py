"""credentials_for and the example connector, against a real agent."""

from __future__ import annotations

import subprocess
import sys

import pytest

import client
from support import ROOT, AgentProcess

RUNPOD = "rp_" + "k" * 30


def test_credentials_for_returns_every_type_of_a_platform(unlocked_agent: AgentProcess) -> None:
    with unlocked_agent.client() as c:
        c.store("runpod", RUNPOD)
        c.store("runpod", "s3cr3t", "api-secret", validate=False)
        c.store("wandb", "w" * 40)
        assert client.credentials_for("runpod", client=c) == {"api_key": RUNPOD, "api_secret": "s3cr3t"}
        assert c.credentials_for("wandb") == {"api_key": "w" * 40}
        with pytest.raises(client.NotFound, match="agent set vastai"):
            c.credentials_for("vastai")


def test_credentials_for_without_a_client_uses_the_default_socket(unlocked_agent: AgentProcess,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    with unlocked_agent.client() as c:
        c.store("runpod", RUNPOD)
    monkeypatch.setenv("CREDENTIAL_AGENT_SOCK", str(unlocked_agent.socket))
    assert client.credentials_for("runpod") == {"api_key": RUNPOD}


async def test_async_credentials_for(unlocked_agent: AgentProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    with unlocked_agent.client() as c:
        c.store("huggingface", "hf_abc")
    async with client.AsyncClient(unlocked_agent.socket, autostart=False) as ac:
        assert await ac.credentials_for("huggingface") == {"api_key": "hf_abc"}
        assert await client.acredentials_for("huggingface", client=ac) == {"api_key": "hf_abc"}
    monkeypatch.setenv("CREDENTIAL_AGENT_SOCK", str(unlocked_agent.socket))
    assert await client.acredentials_for("huggingface") == {"api_key": "hf_abc"}


def test_example_connector_gets_its_key_in_one_call(unlocked_agent: AgentProcess) -> None:
    a = unlocked_agent
    assert a.cli("set", "runpod", input=RUNPOD + "\n").returncode == 0
    done = subprocess.run([sys.executable, str(ROOT / "examples" / "connector.py"), "runpod"], env=a.env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "connected=True" in done.stdout and f"api_key of {len(RUNPOD)} characters" in done.stdout
    assert RUNPOD not in done.stdout + done.stderr
    done = subprocess.run([sys.executable, str(ROOT / "examples" / "connector.py"), "lambdalabs"], env=a.env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "agent set lambdalabs" in done.stderr
