"""Master key rotation: every row re-encrypted, and a crash at any step loses nothing.

The crash tests arm a test-only fault point (agent/faults.py) that makes the agent
``os._exit`` between two steps, then start a fresh agent on the same vault.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from agent import faults
from client import errors
from support import PASSPHRASE, AgentProcess, SecretService, vault_store

CREDS = {("runpod", "api-key"): "rp_" + "a" * 30, ("wandb", "api-key"): "w" * 40,
         ("huggingface", "api-key"): "hf_token_1", ("runpod", "ssh"): "ssh-ed25519 AAAA"}
NEW_PASSPHRASE = "a new and longer passphrase"


def vault_file(a: AgentProcess) -> Path:
    return a.home / "data" / "credential-agent" / "vault.sqlite3"


def sealed(a: AgentProcess) -> dict[tuple[str, str], bytes]:
    with vault_store(a.home) as store:
        return {(r.platform, r.credential_type): r.value for r in store.rows()}


def meta(a: AgentProcess) -> dict[str, bytes]:
    with vault_store(a.home) as store:
        return store.meta()


def fill(a: AgentProcess) -> None:
    with a.client(timeout=30) as c:
        for (p, t), v in CREDS.items():
            c.store(p, v, t, {"note": p}, validate=False)


def check_all(a: AgentProcess, passphrase: str | None = None) -> None:
    with a.client(timeout=30) as c:
        if passphrase is not None:
            c.unlock(passphrase)
        for (p, t), v in CREDS.items():
            assert c.get(p, t) == v
            assert c.metadata(p, t)["metadata"] == {"note": p}


def crash_rotation(a: AgentProcess, point: str, env: dict[str, str], **args: str) -> AgentProcess:
    """Restart ``a`` with the fault armed, rotate, and return a fresh agent on the same vault."""
    a.stop()
    armed = AgentProcess(home=a.home, env={**env, faults.ENV: point}).start()
    with armed.client(timeout=60) as c:
        if "passphrase" in args:
            c.unlock(args["passphrase"])
        with pytest.raises(errors.AgentUnavailable):
            c.call("rotate_key", args)
    assert armed.proc is not None and armed.proc.wait(30) == faults.EXIT_CODE
    return AgentProcess(home=a.home, env=env).start()


# --- passphrase vaults ----------------------------------------------------------------------
def test_rotate_passphrase_vault(unlocked_agent: AgentProcess) -> None:
    a = unlocked_agent
    fill(a)
    before, meta_before = sealed(a), meta(a)
    done = a.cli("rotate-key", input=PASSPHRASE + "\n")
    assert done.returncode == 0, done.stderr
    assert "4 credentials re-encrypted" in done.stdout
    after, meta_after = sealed(a), meta(a)
    assert set(after) == set(before) and all(after[k] != before[k] for k in before)
    assert meta_after["wrapped_key"] != meta_before["wrapped_key"]
    assert meta_after["key_check"] != meta_before["key_check"]
    check_all(a)
    # the same passphrase opens the re-wrapped new key after a restart
    a.stop()
    b = AgentProcess(home=a.home).start()
    check_all(b, PASSPHRASE)


def test_rotate_with_a_new_passphrase(unlocked_agent: AgentProcess) -> None:
    a = unlocked_agent
    fill(a)
    done = a.cli("rotate-key", "--new-passphrase", input=f"{PASSPHRASE}\n{NEW_PASSPHRASE}\n{NEW_PASSPHRASE}\n")
    assert done.returncode == 0, done.stderr
    with a.client(timeout=30) as c:
        c.lock()
        with pytest.raises(errors.BadPassphrase):
            c.unlock(PASSPHRASE)
    check_all(a, NEW_PASSPHRASE)
    assert PASSPHRASE not in a.log() and NEW_PASSPHRASE not in a.log()


def test_rotation_needs_the_current_passphrase(unlocked_agent: AgentProcess) -> None:
    a = unlocked_agent
    fill(a)
    before = sealed(a)
    with a.client(timeout=30) as c:
        with pytest.raises(errors.BadPassphrase):
            c.call("rotate_key")
        with pytest.raises(errors.BadPassphrase):
            c.call("rotate_key", {"passphrase": "wrong"})
        with pytest.raises(errors.BadRequest):
            c.call("rotate_key", {"passphrase": PASSPHRASE, "new_passphrase": ""})
        c.lock()
        with pytest.raises(errors.Locked):
            c.call("rotate_key", {"passphrase": PASSPHRASE})
    assert sealed(a) == before
    check_all(a, PASSPHRASE)


def test_rotation_refuses_a_vault_with_a_corrupt_row(unlocked_agent: AgentProcess) -> None:
    a = unlocked_agent
    fill(a)
    a.stop()
    db = sqlite3.connect(vault_file(a))
    db.execute("UPDATE credentials SET value = (SELECT value FROM credentials WHERE platform = 'wandb') "
               "WHERE platform = 'huggingface'")
    db.commit()
    db.close()
    before = sealed(a)
    b = AgentProcess(home=a.home).start()
    with b.client(timeout=30) as c:
        c.unlock(PASSPHRASE)
        with pytest.raises(errors.IntegrityError, match="huggingface/api-key"):
            c.call("rotate_key", {"passphrase": PASSPHRASE})
        assert c.get("wandb") == CREDS[("wandb", "api-key")]
    assert sealed(b) == before


@pytest.mark.parametrize(("point", "opens_with"), [("rotate:in-transaction", PASSPHRASE),
                                                   ("rotate:after-vault", NEW_PASSPHRASE)])
def test_passphrase_rotation_killed_midway_loses_nothing(unlocked_agent: AgentProcess, point: str,
                                                         opens_with: str) -> None:
    a = unlocked_agent
    fill(a)
    before = sealed(a)
    b = crash_rotation(a, point, {}, passphrase=PASSPHRASE, new_passphrase=NEW_PASSPHRASE)
    try:
        wrong = NEW_PASSPHRASE if opens_with == PASSPHRASE else PASSPHRASE
        with b.client(timeout=30) as c, pytest.raises(errors.BadPassphrase):
            c.unlock(wrong)
        check_all(b, opens_with)
        assert (sealed(b) == before) == (point == "rotate:in-transaction")
        with b.client(timeout=30) as c:
            assert c.call("rotate_key", {"passphrase": opens_with})["credentials"] == len(CREDS)
        check_all(b)
    finally:
        b.cleanup()


# --- OS keystore vaults (a real Secret Service) ---------------------------------------------
def keystore_get(ss: SecretService, account: str) -> str | None:
    code = f"import keyring; print(keyring.get_password('credential-agent', {account!r}))"
    done = subprocess.run([sys.executable, "-c", code], env={**os.environ, **ss.env},
                          capture_output=True, text=True, timeout=30, check=True)
    out = done.stdout.strip()
    return None if out == "None" else out


def live_account(a: AgentProcess) -> str:
    m = meta(a)
    return m["key_account"].decode() if "key_account" in m else f"master-key-{m['vault_id'].decode()}"


def test_rotate_keyring_vault(keyring_agent: AgentProcess, secret_service: SecretService) -> None:
    a = keyring_agent
    with a.client(timeout=30) as c:
        c.init("keyring")
    fill(a)
    old_account = live_account(a)
    old_key = keystore_get(secret_service, old_account)
    before = sealed(a)
    done = a.cli("rotate-key")
    assert done.returncode == 0, done.stderr
    new_account = live_account(a)
    assert new_account != old_account
    assert keystore_get(secret_service, old_account) is None  # the old key is gone
    new_key = keystore_get(secret_service, new_account)
    assert new_key and new_key != old_key
    assert all(sealed(a)[k] != before[k] for k in before)
    assert not {"pending_key_account", "stale_key_account"} & set(meta(a))
    a.stop()
    b = AgentProcess(home=a.home, env=secret_service.env).start()
    check_all(b)  # unlocks itself from the keystore with the new key
    assert b.cli("rotate-key", "--new-passphrase").returncode == 1


@pytest.mark.parametrize("point", ["rotate:after-keystore", "rotate:in-transaction", "rotate:after-vault"])
def test_keyring_rotation_killed_midway_loses_nothing(keyring_agent: AgentProcess, secret_service: SecretService,
                                                      point: str) -> None:
    a = keyring_agent
    with a.client(timeout=30) as c:
        c.init("keyring")
    fill(a)
    old_account = live_account(a)
    before = sealed(a)
    b = crash_rotation(a, point, secret_service.env)
    try:
        m = meta(b)
        if point == "rotate:after-vault":
            assert live_account(b) != old_account and m["stale_key_account"].decode() == old_account
            leftover = old_account
        else:
            assert live_account(b) == old_account and sealed(b) == before
            leftover = m["pending_key_account"].decode()
        assert keystore_get(secret_service, leftover) is not None  # both keys exist at the crash
        check_all(b)  # opens (unlocking itself), every value and its metadata intact
        # that unlock also removed what the crash left in the keystore and the vault
        assert keystore_get(secret_service, leftover) is None
        assert keystore_get(secret_service, live_account(b)) is not None
        assert not {"pending_key_account", "stale_key_account"} & set(meta(b))
        assert b.cli("rotate-key").returncode == 0
        check_all(b)
    finally:
        b.cleanup()
