"""Credential expiry: set --expires, ls marks, get warns or refuses."""

from __future__ import annotations

import json
import logging
import time

import pytest

from agent.cli import _common as cli_extra
from client import Client, errors
from support import AgentProcess

KEY = "r" * 25


def test_parse_duration_and_dates() -> None:
    assert cli_extra.parse_duration("90d") == 90 * 86400
    assert cli_extra.parse_duration("1h30m") == 5400
    assert cli_extra.expires_at("12h", now=1000.0) == 1000.0 + 12 * 3600
    assert cli_extra.expires_at(None) is None
    assert cli_extra.expires_at("2030-01-02") == time.mktime((2030, 1, 2, 0, 0, 0, 0, 0, -1))
    assert cli_extra.parse_duration("90") == 90  # plain numbers are seconds...
    with pytest.raises(cli_extra.CliError, match="90d for days"):
        cli_extra.expires_at("90")  # ...but not for an expiry, where days were more likely meant
    for bad in ("", "d", "5x", "1h 2m", "-1d"):
        with pytest.raises(Exception, match="not a duration"):
            cli_extra.parse_duration(bad)


def test_set_expires_and_ls_marks(unlocked_agent: AgentProcess) -> None:
    a = unlocked_agent
    done = a.cli("set", "runpod", "--expires", "90d", input=KEY + "\n")
    assert done.returncode == 0, done.stderr
    with a.client() as c:
        expires = c.metadata("runpod")["expires_at"]
        assert abs(expires - (time.time() + 90 * 86400)) < 60
        c.store("vastai", "v" * 25, expires_at=time.time() - 5)
        c.store("lambdalabs", "l" * 25, expires_at=time.time() + 3 * 86400 + 60)
        c.store("wandb", "w" * 40)
    ls = a.cli("ls").stdout.splitlines()
    line = {row.split()[0]: row for row in ls[1:]}
    assert line["vastai"].endswith("EXPIRED")
    assert line["lambdalabs"].endswith("(in 3d)")
    assert "EXPIRED" not in line["runpod"] and "(in" not in line["runpod"]
    assert line["wandb"].endswith("-")
    data = json.loads(a.cli("ls", "--json").stdout)
    assert {e["platform"]: e["expires_at"] is None for e in data}["wandb"] is True
    assert a.cli("set", "x", "--expires", "soon", input="abc\n").returncode == 2


def test_update_keeps_expiry_and_store_without_it_clears(unlocked_agent: AgentProcess) -> None:
    with unlocked_agent.client() as c:
        c.store("runpod", KEY, expires_at=2_000_000_000)
        c.update("runpod", "s" * 25)
        assert c.metadata("runpod")["expires_at"] == 2_000_000_000
        c.store("runpod", KEY)
        assert c.metadata("runpod")["expires_at"] is None


def test_expired_get_warns_once_and_still_returns(unlocked_agent: AgentProcess,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    with unlocked_agent.client() as c:
        c.store("runpod", KEY, expires_at=time.time() - 1)
        c.store("wandb", "w" * 40, expires_at=time.time() + 3600)
        with caplog.at_level(logging.WARNING, logger="client"):
            assert c.get("runpod") == KEY
            assert c.get("runpod") == KEY
            assert c.get_many(["runpod", "wandb"]) == [KEY, "w" * 40]
            assert c.get("wandb") == "w" * 40
    warnings = [r for r in caplog.records if r.name == "client"]
    assert len(warnings) == 1 and "runpod/api-key expired" in warnings[0].getMessage()
    assert KEY not in caplog.text


def test_refuse_policy_raises_expired(unlocked_agent: AgentProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    with unlocked_agent.client() as c:
        c.store("runpod", KEY, expires_at=time.time() - 1)
    with unlocked_agent.client(on_expired="refuse") as c:
        with pytest.raises(errors.Expired, match="runpod/api-key expired") as info:
            c.get("runpod")
        assert KEY not in str(info.value)
        with pytest.raises(errors.Expired):
            c.get_many(["runpod"])
    monkeypatch.setenv("CREDENTIAL_AGENT_ON_EXPIRED", "refuse")
    with Client(unlocked_agent.socket, autostart=False) as c, pytest.raises(errors.Expired):
        c.get("runpod")
    with unlocked_agent.client(on_expired="ignore") as c:
        assert c.get("runpod") == KEY
        assert c.call("get", {"platform": "runpod"}) == KEY  # without `expiry`: the bare value, as before
    with pytest.raises(ValueError, match="on_expired"):
        Client(unlocked_agent.socket, on_expired="explode")


async def test_async_client_refuses_expired(unlocked_agent: AgentProcess) -> None:
    from client import AsyncClient

    with unlocked_agent.client() as c:
        c.store("runpod", KEY, expires_at=time.time() - 1)
    async with AsyncClient(unlocked_agent.socket, autostart=False, on_expired="refuse") as ac:
        with pytest.raises(errors.Expired):
            await ac.get("runpod")
    async with AsyncClient(unlocked_agent.socket, autostart=False) as ac:
        assert await ac.get("runpod") == KEY


def test_cli_get_of_expired(unlocked_agent: AgentProcess) -> None:
    a = unlocked_agent
    with a.client() as c:
        c.store("runpod", KEY, expires_at=time.time() - 1)
    done = a.cli("get", "runpod")
    assert done.returncode == 0 and done.stdout == KEY + "\n"
    assert "expired" in done.stderr and KEY not in done.stderr
    done = a.cli("get", "runpod", env={"CREDENTIAL_AGENT_ON_EXPIRED": "refuse"})
    assert done.returncode == 1 and done.stdout == "" and "expired" in done.stderr


def test_expiry_reply_while_locked_keyless(unlocked_agent: AgentProcess) -> None:
    # a locked passphrase vault answers `locked`, with or without the expiry flag
    with unlocked_agent.client() as c:
        c.store("runpod", KEY, expires_at=time.time() - 1)
        c.lock()
        with pytest.raises(errors.Locked):
            c.get("runpod")
