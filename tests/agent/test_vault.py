"""The vault through a real agent: passphrase key source, lock states, CRUD, integrity."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from client import errors
from support import PASSPHRASE, AgentProcess, until

HF = "hf_" + "A" * 34
RUNPOD = "rp_" + "B" * 30


def vault_file(a: AgentProcess) -> Path:
    return a.home / "data" / "credential-agent" / "vault.sqlite3"


def test_uninitialised_agent_says_run_init(agent: AgentProcess) -> None:
    with agent.client() as c:
        with pytest.raises(errors.NotInitialized) as info:
            c.get("huggingface")
    assert "agent init" in info.value.message
    done = agent.cli("get", "huggingface")
    assert done.returncode == 1 and "agent init" in done.stderr


def test_crud_semantics(unlocked_agent: AgentProcess) -> None:
    with unlocked_agent.client() as c:
        c.store("huggingface", HF, metadata={"owner": "alice"})
        assert c.get("huggingface") == HF
        c.update("huggingface", HF + "x")  # keeps the metadata
        assert c.get("huggingface") == HF + "x"
        assert c.metadata("huggingface")["metadata"] == {"owner": "alice"}
        c.update("huggingface", HF, metadata={"owner": "bob"})
        assert c.metadata("huggingface")["metadata"] == {"owner": "bob"}
        c.store("huggingface", HF)  # store replaces, metadata included
        assert c.metadata("huggingface")["metadata"] == {}
        with pytest.raises(errors.NotFound):
            c.update("runpod", RUNPOD)
        c.store("runpod", RUNPOD, "ssh-key", validate=True)
        assert c.get("runpod", "ssh-key") == RUNPOD
        with pytest.raises(errors.NotFound):
            c.get("runpod")  # other type
        names = [(e["platform"], e["credential_type"]) for e in c.list()]
        assert names == [("huggingface", "api-key"), ("runpod", "ssh-key")]
        assert HF not in json.dumps(c.list())
        c.delete("runpod", "ssh-key")
        with pytest.raises(errors.NotFound):
            c.delete("runpod", "ssh-key")
        with pytest.raises(errors.NotFound):
            c.metadata("runpod", "ssh-key")
        assert c.status()["credentials"] == 1


def test_timestamps(unlocked_agent: AgentProcess) -> None:
    with unlocked_agent.client() as c:
        before = time.time()
        c.store("a", "v1", validate=False)
        first = c.metadata("a")
        time.sleep(0.01)
        c.update("a", "v2", validate=False)
        second = c.metadata("a")
    assert before - 1 <= first["created"] <= first["updated"] <= time.time()
    assert second["created"] == first["created"] and second["updated"] > first["updated"]


def test_validation_on_store_names_the_rule(unlocked_agent: AgentProcess) -> None:
    with unlocked_agent.client() as c:
        with pytest.raises(errors.InvalidCredential) as info:
            c.store("huggingface", "not-a-token-SECRET")
        assert "hf_" in info.value.message and "SECRET" not in info.value.message
        c.store("huggingface", "not-a-token-SECRET", validate=False)  # explicit opt-out
        assert c.validate("wandb", "a" * 40) is True
        assert c.validate("wandb", "a" * 39) is False
        for bad in ("", "has space", "a/b", "x" * 65, "é"):
            with pytest.raises(errors.BadRequest):
                c.store(bad, "v", validate=False)
            with pytest.raises(errors.BadRequest):
                c.get(bad)
        with pytest.raises(errors.BadRequest):
            c.store("ok", "v", credential_type="bad type", validate=False)


def test_lock_unlock_and_wrong_passphrase_delay(unlocked_agent: AgentProcess) -> None:
    a = unlocked_agent
    with a.client() as c:
        c.store("runpod", RUNPOD)
        c.lock()
        st = c.status()
        assert st["locked"] and st["locked_by_user"]
        with pytest.raises(errors.Locked) as info:
            c.get("runpod")
        assert "agent unlock" in info.value.message
        with pytest.raises(errors.Locked):
            c.metadata("runpod")
        # names stay listable while locked, without metadata
        assert [(e["platform"], "metadata" in e) for e in c.list()] == [("runpod", False)]
        with pytest.raises(errors.BadPassphrase):
            c.unlock()  # no passphrase given
        assert (c.status()["unlock_failures"], c.status()["unlock_delay_s"]) == (0, 0.0)  # that was no guess
        durations, reported = [], []
        for _ in range(3):
            t = time.monotonic()
            with pytest.raises(errors.BadPassphrase):
                c.unlock("wrong")
            durations.append(time.monotonic() - t)
            st = c.status()
            reported.append((st["unlock_failures"], st["unlock_delay_s"]))
        c.unlock(PASSPHRASE)
        assert c.get("runpod") == RUNPOD
        assert (c.status()["unlock_failures"], c.status()["unlock_delay_s"]) == (0, 0.0)  # reset by success
    # the delay grows with each consecutive failure (0.1 s, 0.2 s, 0.3 s on top of scrypt), as the
    # agent reports it; each reply waited at least its delay (a lower bound: no machine is too slow for it)
    assert reported == [(1, 0.1), (2, 0.2), (3, pytest.approx(0.3))], reported
    assert all(d >= r for d, (_, r) in zip(durations, reported, strict=True)), durations
    logged = [float(x) for x in re.findall(r"consecutive failures\); answering in ([\d.]+) s", a.log())]
    assert logged == [0.1, 0.2, 0.3], logged
    assert "wrong" not in a.log().replace("wrong passphrase", "")


def test_failure_delay_does_not_block_other_clients(unlocked_agent: AgentProcess) -> None:
    a = unlocked_agent
    with a.client() as c:
        c.lock()
    results: list[tuple[int, int]] = []

    def guess() -> None:
        with a.client() as g:
            for _ in range(4):
                try:
                    g.unlock("wrong")
                except errors.BadPassphrase:
                    pass

    t = threading.Thread(target=guess)
    t.start()
    with a.client() as c:
        while t.is_alive():
            st = c.status()
            results.append((st["unlocks_waiting"], st["unlock_failures"]))
            time.sleep(0.02)
    t.join()
    # status was answered while a guess that follows a failure was in its KDF or its
    # delay (the agent says so): the delay holds the guesser, not everyone
    assert any(waiting == 1 and failures >= 1 for waiting, failures in results), results


def test_cli_flow_and_locked_message(unlocked_agent: AgentProcess) -> None:
    a = unlocked_agent
    assert a.cli("set", "huggingface", "--meta", "owner=alice", input=HF + "\n").returncode == 0
    got = a.cli("get", "huggingface")
    assert got.returncode == 0 and got.stdout == HF + "\n"
    ls = a.cli("ls", "--json")
    assert json.loads(ls.stdout)[0]["platform"] == "huggingface" and HF not in ls.stdout
    show = a.cli("show", "huggingface", "--json")
    assert json.loads(show.stdout)["metadata"] == {"owner": "alice"} and HF not in show.stdout
    bad = a.cli("set", "huggingface", input="nope\n")
    assert bad.returncode == 1 and "hf_" in bad.stderr
    empty = a.cli("set", "runpod", input="")
    assert empty.returncode == 1 and "empty" in empty.stderr
    assert a.cli("validate", "wandb", input="a" * 40 + "\n").returncode == 0
    assert a.cli("validate", "wandb", input="short\n").returncode == 1
    assert a.cli("lock").returncode == 0
    locked = a.cli("get", "huggingface")
    assert locked.returncode == 3 and "agent unlock" in locked.stderr
    assert a.cli("unlock", input="wrong\n").returncode == 1
    assert a.cli("unlock", input=PASSPHRASE + "\n").returncode == 0
    assert a.cli("rm", "huggingface").returncode == 0
    missing = a.cli("get", "huggingface")
    assert missing.returncode == 1 and "no credential" in missing.stderr


def test_sigusr1_locks_at_once(unlocked_agent: AgentProcess) -> None:
    a = unlocked_agent
    with a.client() as c:
        c.store("runpod", RUNPOD)
        a.signal(signal.SIGUSR1)
        deadline = time.monotonic() + 5
        while not c.status()["locked"] and time.monotonic() < deadline:
            time.sleep(0.01)
        st = c.status()
        assert st["locked"] and st["locked_by_user"]


def test_restart_keeps_everything(unlocked_agent: AgentProcess) -> None:
    a = unlocked_agent
    with a.client() as c:
        for i in range(20):
            c.store(f"p{i}", f"value-{i}", metadata={"i": i}, validate=False)
    a.kill()  # not even a clean shutdown
    a.start()
    with a.client() as c:
        st = c.status()
        assert st["locked"] and st["initialized"] and st["credentials"] == 20 and st["key_source"] == "passphrase"
        c.unlock(PASSPHRASE)
        assert [c.get(f"p{i}") for i in range(20)] == [f"value-{i}" for i in range(20)]
        assert c.metadata("p7")["metadata"] == {"i": 7}


def test_second_init_refuses(unlocked_agent: AgentProcess) -> None:
    with unlocked_agent.client() as c:
        c.store("a", "keepme", validate=False)
        with pytest.raises(errors.AlreadyExists):
            c.init("passphrase", "another")
        assert c.get("a") == "keepme"
    done = unlocked_agent.cli("init", "--key-source", "passphrase", input="x\n")
    assert done.returncode == 1 and "already exists" in done.stderr


def test_init_from_cli_with_passphrase_on_stdin(agent: AgentProcess) -> None:
    done = agent.cli("init", "--key-source", "passphrase", input="pw-from-stdin\n")
    assert done.returncode == 0, done.stderr
    assert "passphrase" in done.stdout
    assert agent.cli("lock").returncode == 0
    assert agent.cli("unlock", input="pw-from-stdin\n").returncode == 0


def test_init_without_keystore_falls_back_to_passphrase(agent: AgentProcess) -> None:
    # this agent's keyring backend is keyring.backends.fail: no keystore at all
    done = agent.cli("init", input="fallback-pw\n")
    assert done.returncode == 0, done.stderr
    assert "no working OS keystore" in done.stderr and "passphrase" in done.stdout
    with agent.client() as c:
        assert c.status()["key_source"] == "passphrase"


def test_init_with_keyring_and_no_keystore_says_what_to_do(agent: AgentProcess) -> None:
    with agent.client() as c:
        with pytest.raises(errors.KeystoreUnavailable) as info:
            c.init("keyring")
        assert "passphrase" in info.value.message
        assert c.status()["initialized"] is False
    done = agent.cli("init", "--key-source", "keyring")
    assert done.returncode == 1 and "keystore" in done.stderr


def test_canary_is_never_on_disk_in_the_clear(unlocked_agent: AgentProcess) -> None:
    a = unlocked_agent
    canary = "CANARY_" + os.urandom(8).hex()
    with a.client() as c:
        c.store("canary", canary, metadata={"note": canary}, validate=False)
        c.update("canary", canary + "2", validate=False)
        assert c.get("canary") == canary + "2"
    a.stop()
    found = []
    for root, _dirs, files in os.walk(a.home):
        for name in files:
            path = Path(root) / name
            data = path.read_bytes()
            if canary.encode() in data or canary.encode("utf-16-le") in data:
                found.append(str(path))
    assert found == []


def _rows(a: AgentProcess) -> sqlite3.Connection:
    return sqlite3.connect(vault_file(a))


def test_tampered_row_is_detected_not_returned(unlocked_agent: AgentProcess) -> None:
    a = unlocked_agent
    with a.client() as c:
        c.store("a", "value-a", validate=False)
        c.store("b", "value-b", validate=False)
    a.stop()
    db = _rows(a)
    (token,) = db.execute("SELECT value FROM credentials WHERE platform='a'").fetchone()
    t = bytearray(token)
    t[30] = ord("A") if t[30] != ord("A") else ord("B")
    db.execute("UPDATE credentials SET value=? WHERE platform='a'", (bytes(t),))
    db.commit()
    db.close()
    a.start()
    with a.client() as c:
        c.unlock(PASSPHRASE)
        with pytest.raises(errors.IntegrityError):
            c.get("a")
        assert c.get("b") == "value-b"  # the rest still works
        c.store("a", "fresh", validate=False)  # and the bad one can be replaced
        assert c.get("a") == "fresh"
    assert "value-a" not in a.log()


def test_swapped_rows_are_detected(unlocked_agent: AgentProcess) -> None:
    a = unlocked_agent
    with a.client() as c:
        c.store("a", "value-a", validate=False)
        c.store("b", "value-b", validate=False)
    a.stop()
    db = _rows(a)
    (ta,) = db.execute("SELECT value FROM credentials WHERE platform='a'").fetchone()
    (tb,) = db.execute("SELECT value FROM credentials WHERE platform='b'").fetchone()
    db.execute("UPDATE credentials SET value=? WHERE platform='a'", (tb,))
    db.execute("UPDATE credentials SET value=? WHERE platform='b'", (ta,))
    # and a value token moved into a metadata column
    db.commit()
    db.close()
    a.start()
    with a.client() as c:
        c.unlock(PASSPHRASE)
        for name in ("a", "b"):
            with pytest.raises(errors.IntegrityError):
                c.get(name)


def test_value_moved_into_metadata_is_detected(unlocked_agent: AgentProcess) -> None:
    a = unlocked_agent
    with a.client() as c:
        c.store("a", "value-a", validate=False)
    a.stop()
    db = _rows(a)
    db.execute("UPDATE credentials SET metadata=value WHERE platform='a'")
    db.commit()
    db.close()
    a.start()
    with a.client() as c:
        c.unlock(PASSPHRASE)
        with pytest.raises(errors.IntegrityError):
            c.metadata("a")


def test_metadata_holds_any_msgpack_map(unlocked_agent: AgentProcess) -> None:
    meta = {"tags": ["a", "b"], "n": 3, "nested": {"x": None, "ok": True}, "f": 1.5}
    with unlocked_agent.client() as c:
        c.store("m", "v", metadata=meta, validate=False)
        assert c.metadata("m")["metadata"] == meta


def test_a_deleted_data_dir_gets_no_write_and_locks_the_agent(unlocked_agent: AgentProcess) -> None:
    """README's "delete for good" done while the agent runs: no write is acknowledged into
    the unlinked file, status says so, the agent locks, and a restart starts afresh."""
    import shutil

    a = unlocked_agent
    with a.client() as c:
        c.store("runpod", "r" * 25)
    shutil.rmtree(vault_file(a).parent)
    done = a.cli("set", "wandb", input="w" * 40 + "\n")
    assert done.returncode == 1
    assert "was deleted or moved while the agent ran; nothing was written" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    with a.client() as c:
        until(lambda: c.status()["locked"], 30, "the agent locking")
        st = c.status()
        assert st["vault_replaced"] == "deleted or moved" and st["locked_by_user"]
        with pytest.raises(errors.AgentError, match="deleted or moved"):
            c.unlock(PASSPHRASE)
    status = a.cli("status")
    assert "VAULT:" in status.stdout and "deleted or moved" in status.stdout
    a.stop()
    a.start()
    with a.client() as c:
        assert not c.status()["initialized"]  # what is at the path now: nothing


def test_a_vault_file_replaced_under_the_agent_gets_no_write(unlocked_agent: AgentProcess) -> None:
    a = unlocked_agent
    with a.client() as c:
        c.store("runpod", "r" * 25)
    path = vault_file(a)
    copy = path.with_name("restored.sqlite3")
    db = sqlite3.connect(path)
    db.execute("VACUUM INTO ?", (str(copy),))
    db.close()
    os.replace(copy, path)  # a restore copied over it
    with a.client() as c:
        with pytest.raises(errors.AgentError, match="was replaced by another file while the agent ran"):
            c.store("wandb", "w" * 40)
        assert c.status()["vault_replaced"] == "replaced by another file"
    a.stop()
    a.start()
    with a.client() as c:  # the restored file is the vault now, with what it held
        c.unlock(PASSPHRASE)
        assert [e["platform"] for e in c.list()] == ["runpod"]
