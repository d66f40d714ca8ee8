"""Client-side guards: an absurd expiry from the agent never crashes a caller, and
the clients wait long enough for slow operations and for the agent's keystore deadline."""

from __future__ import annotations

import logging
import math
import socket
import struct
import time

import pytest

from agent.keys import keyring as keystore
from client import AsyncClient, CredentialService, errors
from client.messages import unwrap_get
from client.transport import DEFAULT_TIMEOUT, SLOW_TIMEOUT
from support import PASSPHRASE, AgentProcess

KEY = "r" * 25
ABSURD = [math.nan, math.inf, -math.inf, 1e300, -1e300, 2.0**63, -(2.0**63)]


@pytest.mark.parametrize("expires", ABSURD)
def test_absurd_expiry_counts_as_expired_on_an_unknown_date(expires: float, caplog: pytest.LogCaptureFixture) -> None:
    reply = {"value": KEY, "expires_at": expires}
    with caplog.at_level(logging.WARNING, logger="client"):
        assert unwrap_get(reply, "runpod", "api-key", "warn", set()) == KEY
    assert "expired on an unknown date" in caplog.text
    with pytest.raises(errors.Expired, match="unknown date"):
        unwrap_get(reply, "runpod", "api-key", "refuse", set())
    assert unwrap_get(reply, "runpod", "api-key", "ignore", set()) == KEY


def test_ordinary_expiry_still_works() -> None:
    assert unwrap_get({"value": KEY, "expires_at": time.time() + 60}, "p", "api-key", "refuse", set()) == KEY
    assert unwrap_get({"value": KEY, "expires_at": None}, "p", "api-key", "refuse", set()) == KEY
    with pytest.raises(errors.Expired, match=r"expired on \d{4}-\d\d-\d\d"):
        unwrap_get({"value": KEY, "expires_at": time.time() - 60}, "p", "api-key", "refuse", set())


def test_absurd_expiry_already_in_a_vault(unlocked_agent: AgentProcess) -> None:
    """The agent refuses such values now; a vault written before that may still hold one."""
    import sqlite3

    a = unlocked_agent
    with a.client(timeout=30) as c:
        with pytest.raises(errors.BadRequest):
            c.store("runpod", KEY, expires_at=-1e300)
        c.store("runpod", KEY)
    a.stop()
    db = sqlite3.connect(a.home / "data" / "credential-agent" / "vault.sqlite3")
    db.execute("UPDATE credentials SET expires = -1e300 WHERE platform = 'runpod'")
    db.commit()
    db.close()
    a.start()
    with a.client(timeout=30) as c:
        c.unlock(PASSPHRASE)
        assert c.get("runpod") == KEY  # warns, returns
        svc = CredentialService(c)
        assert svc.get_credential("runpod") == KEY
        meta = svc.get_credential_metadata("runpod")
        assert meta is not None and meta["expires_at"] is None  # no date to show; logged
    done = a.cli("ls")
    assert done.returncode == 0 and "runpod" in done.stdout, done.stderr


def test_default_timeout_outlasts_the_keystore_deadline() -> None:
    # a hung keystore must reach the caller as keystore_unavailable, not AgentTimeout
    assert DEFAULT_TIMEOUT >= keystore.DEFAULT_DEADLINE + 5
    assert SLOW_TIMEOUT >= 10 + keystore.DEFAULT_DEADLINE + 10  # fail delay + keystore + scrypt


def test_slow_ops_get_the_longer_timeout(unlocked_agent: AgentProcess) -> None:
    # scrypt for a wrong passphrase takes far longer than this client's 0.05 s
    with unlocked_agent.client(timeout=0.05) as c:
        c.lock()
        with pytest.raises(errors.BadPassphrase):
            c.unlock("wrong")
        c.unlock(PASSPHRASE)
        with pytest.raises(errors.BadPassphrase):
            c.call("rotate_key", {"passphrase": "wrong"})
        # a batch with a slow op waits as long as the slow op
        results = c.call_many([("rotate_key", {"passphrase": "wrong"}), ("hello", {})])
        assert isinstance(results[0], errors.BadPassphrase) and "protocol" in results[1]
        c.hello()  # then the ordinary timeout again: the kernel's timeouts were put back
        assert c._sock is not None and c._sock.gettimeout() is None  # blocking: no poll per call
        for opt in (socket.SO_RCVTIMEO, socket.SO_SNDTIMEO):
            sec, usec = struct.unpack("@ll", c._sock.getsockopt(socket.SOL_SOCKET, opt, 16))
            assert sec + usec / 1e6 == pytest.approx(0.05, abs=0.01), opt  # the kernel rounds to its tick


async def test_async_slow_ops_get_the_longer_timeout(unlocked_agent: AgentProcess) -> None:
    async with AsyncClient(unlocked_agent.socket, autostart=False, timeout=0.05) as c:
        await c.lock()
        with pytest.raises(errors.BadPassphrase):
            await c.unlock("wrong")
        await c.unlock(PASSPHRASE)
        with pytest.raises(errors.BadPassphrase):
            await c.call("rotate_key", {"passphrase": "wrong"})
