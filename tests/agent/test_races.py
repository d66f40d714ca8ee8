"""Requests that race a rotation, a lock or an unlock, and the checks on what a write accepts.

Each race is set up with a passphrase vault, whose scrypt (~0.4 s here, more on a
busy machine) keeps a rotation or an unlock in flight long enough to send the
competing request; each test checks the race was really exercised.
"""

from __future__ import annotations

import math
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import pytest

from client import errors
from support import PASSPHRASE, ROOT, AgentProcess, SecretService, raw_request, short_tmpdir

RUNPOD = "rp_" + "a" * 30
WANDB = "w" * 40


def vault_file(a: AgentProcess) -> Path:
    return a.home / "data" / "credential-agent" / "vault.sqlite3"


def in_thread(fn: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    """Run ``fn`` in a thread; the dict gets its "result" or its "error"."""
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["result"] = fn()
        except Exception as e:  # handed to the test
            out["error"] = e

    t = threading.Thread(target=run)
    t.start()
    return t, out


def rotate(a: AgentProcess, passphrase: str) -> Callable[[], Any]:
    def call() -> Any:
        with a.client(timeout=60) as c:
            return c.call("rotate_key", {"passphrase": passphrase})
    return call


# --- (1) a write during a rotation -----------------------------------------------------------
def test_write_during_rotation_is_kept(unlocked_agent: AgentProcess) -> None:
    a = unlocked_agent
    with a.client(timeout=30) as c:
        c.store("runpod", RUNPOD)
    waited = 0.0
    for _ in range(3):  # until the store really waited behind the rotation
        t, out = in_thread(rotate(a, PASSPHRASE))
        time.sleep(0.15)  # the rotation is in scrypt now, holding the write lock
        with a.client(timeout=60) as c:
            began = time.monotonic()
            c.store("wandb", WANDB, metadata={"team": "ml"})  # acknowledged ...
            waited = time.monotonic() - began
        t.join(60)
        assert out.get("result", {}).get("key_source") == "passphrase", out
        if waited > 0.1:
            break
    assert waited > 0.1, "the store never overlapped a rotation"
    with a.client(timeout=30) as c:
        assert c.get("wandb") == WANDB  # ... so kept: from the cache ...
        c.lock()
        c.unlock(PASSPHRASE)
        assert c.get("wandb") == WANDB  # ... and in the vault, under the key now in use
        assert c.metadata("wandb")["metadata"] == {"team": "ml"}
        assert c.get("runpod") == RUNPOD


def test_delete_during_rotation_is_kept(unlocked_agent: AgentProcess) -> None:
    a = unlocked_agent
    with a.client(timeout=30) as c:
        c.store("runpod", RUNPOD)
        c.store("wandb", WANDB)
    t, out = in_thread(rotate(a, PASSPHRASE))
    time.sleep(0.15)
    with a.client(timeout=60) as c:
        c.delete("wandb")
    t.join(60)
    assert "result" in out, out
    with a.client(timeout=30) as c:
        c.lock()
        c.unlock(PASSPHRASE)
        assert [e["platform"] for e in c.list()] == ["runpod"]
        assert c.get("runpod") == RUNPOD


# --- (2) a lock during an unlock or init -----------------------------------------------------
def _lock_by(a: AgentProcess, how: str) -> None:
    if how == "signal":
        a.signal(signal.SIGUSR1)
    else:
        with a.client(timeout=30) as c:
            c.lock()


@pytest.mark.parametrize("how", ["signal", "request"])
def test_lock_during_unlock_wins(unlocked_agent: AgentProcess, how: str) -> None:
    a = unlocked_agent
    with a.client(timeout=30) as c:
        c.store("runpod", RUNPOD)
        c.lock()

    def unlock() -> None:
        with a.client(timeout=60) as c:
            c.unlock(PASSPHRASE)

    t, out = in_thread(unlock)
    time.sleep(0.1)  # the unlock is in scrypt now
    _lock_by(a, how)
    t.join(60)
    assert isinstance(out.get("error"), errors.Locked), out
    assert "locked by request while" in str(out["error"])
    with a.client(timeout=30) as c:
        assert c.status()["locked"] is True
        with pytest.raises(errors.Locked):
            c.get("runpod")
        c.unlock(PASSPHRASE)  # a later unlock works as ever
        assert c.get("runpod") == RUNPOD


def test_lock_during_init_leaves_the_vault_created_and_locked(agent: AgentProcess) -> None:
    def init() -> None:
        agent.init_passphrase()

    t, out = in_thread(init)
    time.sleep(0.1)  # init is wrapping the new key (scrypt)
    _lock_by(agent, "signal")
    t.join(60)
    assert isinstance(out.get("error"), errors.Locked), out
    assert "agent unlock" in str(out["error"])
    with agent.client(timeout=30) as c:
        st = c.status()
        assert (st["initialized"], st["locked"]) == (True, True)
        c.unlock(PASSPHRASE)
        c.store("runpod", RUNPOD)
        assert c.get("runpod") == RUNPOD


# --- (3) update: racing a lock, and on a corrupt row -------------------------------------
def test_update_racing_a_lock_is_refused_and_keeps_metadata(unlocked_agent: AgentProcess) -> None:
    a = unlocked_agent
    meta = {"team": "ml", "source": "dotenv"}
    with a.client(timeout=30) as c:
        c.store("runpod", RUNPOD, metadata=meta)
    slow, slow_out = in_thread(rotate(a, "typo"))  # holds the write lock for scrypt + the failure delay
    time.sleep(0.1)

    def update() -> None:
        with a.client(timeout=60) as c:
            c.update("runpod", "rp_" + "b" * 30)

    u, out = in_thread(update)
    time.sleep(0.1)  # the update waits for the write lock
    with a.client(timeout=30) as c:
        c.lock()
    slow.join(60)
    u.join(60)
    assert isinstance(slow_out.get("error"), errors.BadPassphrase), slow_out
    assert isinstance(out.get("error"), errors.Locked), out
    with a.client(timeout=30) as c:
        c.unlock(PASSPHRASE)
        assert c.get("runpod") == RUNPOD
        assert c.metadata("runpod")["metadata"] == meta


def test_update_of_a_corrupt_row_needs_metadata(unlocked_agent: AgentProcess) -> None:
    a = unlocked_agent
    with a.client(timeout=30) as c:
        c.store("runpod", RUNPOD, metadata={"team": "ml"})
        c.store("wandb", WANDB)
        c.lock()
    db = sqlite3.connect(vault_file(a))  # a sealed row bound to another name fails its check
    db.execute("UPDATE credentials SET metadata = (SELECT metadata FROM credentials WHERE platform = 'wandb') "
               "WHERE platform = 'runpod'")
    db.commit()
    db.close()
    new = "rp_" + "c" * 30
    with a.client(timeout=30) as c:
        c.unlock(PASSPHRASE)
        with pytest.raises(errors.IntegrityError, match="pass metadata to update it, or use store") as e:
            c.update("runpod", new)
        assert new not in str(e.value)
        with pytest.raises(errors.IntegrityError):
            c.get("runpod")  # nothing was written
        c.update("runpod", new, metadata={"team": "infra"})
        assert c.get("runpod") == new
        assert c.metadata("runpod")["metadata"] == {"team": "infra"}
        assert c.get("wandb") == WANDB


# --- (4) the master key after a lock ---------------------------------------------------------
_KEY_FETCH = """
import asyncio, sys
from pathlib import Path
from agent.config import Options
from agent.state import Agent

async def main(d: Path) -> None:
    a = Agent(Options(socket=d / "agent.sock", vault=d / "vault.sqlite3"))
    await a.init("keyring", None)
    a.lock(explicit=False, reason="test")  # as the auto-lock timer: the next use fetches the key
    await a.storage()
    print("after-unlock", a.source()._fetch is None)
    a.lock()
    print("after-lock", a.source()._fetch is None, a.locked)
    a.close()

asyncio.run(main(Path(sys.argv[1])))
"""


def test_no_key_fetch_is_kept_after_unlock_or_lock(secret_service: SecretService) -> None:
    """White-box, in a fresh process on the real Secret Service: the agent holds no
    finished fetch (whose result is the master key) once unlocked, nor after a lock."""
    home = short_tmpdir()
    try:
        env = {**secret_service.env, "PYTHONPATH": str(ROOT), "HOME": str(home)}
        done = subprocess.run([sys.executable, "-c", _KEY_FETCH, str(home)], env=env,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert done.stdout.split("\n")[:2] == ["after-unlock True", "after-lock True True"]
    finally:
        subprocess.run(["rm", "-rf", str(home)], check=False)


# --- (5) expires_at -----------------------------------------------------------------------------
BAD_EXPIRES = [math.nan, math.inf, -math.inf, 1e300, -1e300, -1.0, 253402300800.0, 2**63]


@pytest.mark.parametrize("op", ["store", "update"])
def test_bad_expires_at_is_refused(unlocked_agent: AgentProcess, op: str) -> None:
    a = unlocked_agent
    with a.client(timeout=30) as c:
        c.store("runpod", RUNPOD)
        for expires in BAD_EXPIRES:
            with pytest.raises(errors.BadRequest, match="expires_at") as e:
                getattr(c, op)("runpod", WANDB, validate=False, expires_at=expires)
            assert WANDB not in str(e.value)
        assert c.get("runpod") == RUNPOD  # untouched, no expiry
        assert c.metadata("runpod")["expires_at"] is None
    done = a.cli("ls")
    assert done.returncode == 0, done.stderr
    assert WANDB not in a.log()


def test_bad_expires_at_in_a_raw_frame(unlocked_agent: AgentProcess) -> None:
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(30)
    s.connect(str(unlocked_agent.socket))
    with s:
        s.sendall(raw_request("store", {"platform": "runpod", "value": RUNPOD, "expires_at": math.nan}))
        head = s.recv(4, socket.MSG_WAITALL)
        reply = msgpack.unpackb(s.recv(int.from_bytes(head, "big"), socket.MSG_WAITALL))
    assert reply["ok"] is False
    assert reply["error"]["code"] == "bad_request" and "expires_at" in reply["error"]["message"]


@pytest.mark.parametrize("expires", [0, 253402300799.0])
def test_expires_at_bounds_are_accepted(unlocked_agent: AgentProcess, expires: float) -> None:
    with unlocked_agent.client(timeout=30) as c:
        c.store("runpod", RUNPOD, expires_at=expires)
        assert c.metadata("runpod")["expires_at"] == expires
    done = unlocked_agent.cli("ls")
    assert done.returncode == 0, done.stderr
