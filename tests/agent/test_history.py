"""Previous values on real agent processes: an overwrite or a deletion loses nothing,
versions read back and restore, limits hold, and a rotation re-seals them."""

from __future__ import annotations

import sqlite3
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from client import errors
from support import PASSPHRASE, AgentProcess, vault_store


@pytest.fixture(scope="module")
def shared() -> Iterator[AgentProcess]:
    """One agent for the tests that each use names of their own."""
    a = AgentProcess().start()
    a.init_passphrase()
    yield a
    a.cleanup()


def versions(a: AgentProcess, platform: str, ctype: str = "api-key") -> list[str]:
    with a.client() as c:
        return [c.history_value(platform, r["version"], ctype)["value"] for r in c.history(platform, ctype)]


def test_an_overwrite_keeps_the_old_value_and_who_replaced_it(shared: AgentProcess) -> None:
    with shared.client() as c:
        c.store("over", "v1", metadata={"team": "a"}, expires_at=4102444800.0)
        c.store("over", "v2", metadata={"team": "b"})
        c.store("over", "v3")
        rows = c.history("over")
        assert [r["version"] for r in rows] == [1, 2]
        assert all(r["reason"] == "replaced" and r["platform"] == "over" for r in rows)
        assert rows[0]["replaced"] >= rows[1]["replaced"] and rows[1]["set_at"] <= rows[0]["set_at"]
        # the executable as the kernel names it, and the script this process runs (pytest's)
        assert rows[0]["by"] == str(Path(sys.executable).resolve())
        assert rows[0]["caller"] and "pytest" in rows[0]["caller"]
        assert all("value" not in r for r in rows)  # a listing never carries values
        assert c.history_value("over", 1) == {
            **c.history_value("over", 1), "value": "v2", "metadata": {"team": "b"}, "expires_at": None}
        v2 = c.history_value("over", 2)
        assert (v2["value"], v2["metadata"], v2["expires_at"]) == ("v1", {"team": "a"}, 4102444800.0)
        assert c.get("over") == "v3"


def test_a_write_that_changes_nothing_adds_no_version(shared: AgentProcess) -> None:
    with shared.client() as c:
        c.store("same", "value", metadata={"k": "v"})
        c.store("same", "value", metadata={"k": "v"})
        c.update("same", "value")
        assert c.history("same") == []
        c.update("same", "value", metadata={"k": "w"})  # metadata alone is a change
        assert c.history_value("same", 1)["metadata"] == {"k": "v"}


def test_rm_is_undone_by_a_restore(shared: AgentProcess) -> None:
    with shared.client() as c:
        c.store("gone", "precious", "read", metadata={"why": "prod"}, expires_at=4102444800.0)
        c.delete("gone", "read")
        with pytest.raises(errors.NotFound):
            c.get("gone", "read")
        [row] = c.history("gone", "read")
        assert (row["reason"], row["version"]) == ("deleted", 1)
        assert any(r["platform"] == "gone" and r["reason"] == "deleted" for r in c.history())
        assert c.history_restore("gone", 1, "read")["created"] is True
        assert c.get("gone", "read") == "precious"
        meta = c.metadata("gone", "read")
        assert (meta["metadata"], meta["expires_at"]) == ({"why": "prod"}, 4102444800.0)


def test_a_restore_keeps_the_value_it_replaces(shared: AgentProcess) -> None:
    with shared.client() as c:
        c.store("undo", "good")
        c.store("undo", "bad")
        assert c.history_restore("undo", 1)["created"] is False
        assert c.get("undo") == "good"
        assert c.history_value("undo", 1)["value"] == "bad"  # so the restore is undone the same way
        c.history_restore("undo", 1)
        assert c.get("undo") == "bad"


def test_versions_that_are_not_there_are_clear_errors(shared: AgentProcess) -> None:
    with shared.client() as c:
        c.store("few", "a")
        c.store("few", "b")
        kept = r"few/api-key has no version 2 in its history \(1 previous value kept\)"
        with pytest.raises(errors.NotFound, match=kept):
            c.history_value("few", 2)
        with pytest.raises(errors.NotFound, match="no version 1"):
            c.history_restore("never-stored", 1)
        with pytest.raises(errors.BadRequest, match="version must be between 1"):
            c.history_value("few", 0)
        for huge in (2**31, 2**63 + 5, 2**64 - 1):  # past what SQLite's LIMIT takes: a clear error
            with pytest.raises(errors.BadRequest, match="version must be between 1"):
                c.history_restore("few", huge)
        with pytest.raises(errors.BadRequest, match="limit"):
            c.history("few", limit=0)
        with pytest.raises(errors.BadRequest):
            c.history("bad name!")
        assert c.get("few") == "b"  # and the agent goes on serving


def test_names_are_canonical_in_history_too(shared: AgentProcess) -> None:
    with shared.client() as c:
        c.store("hugging-face", "hf_1", validate=False)
        c.store("HF", "hf_2", validate=False)
        assert [r["platform"] for r in c.history("hf")] == ["huggingface"]
        assert c.history_value("Hugging_Face", 1)["value"] == "hf_1"


def test_mv_over_a_name_keeps_the_value_it_replaced(shared: AgentProcess) -> None:
    with shared.client() as c:
        c.store("mv-from", "moving")
        c.store("mv-to", "replaced-by-mv")
        c.store("mv-from", "moving-2")
        c.rename("mv-from", "mv-to", replace=True)
        assert c.get("mv-to") == "moving-2"
        # the value it replaced, then the moved key's own previous value, under the new name
        assert [c.history_value("mv-to", v)["value"] for v in (1, 2)] == ["replaced-by-mv", "moving"]
        assert c.history("mv-from") == []


def test_history_lists_while_locked_and_reads_only_unlocked(shared: AgentProcess) -> None:
    with shared.client() as c:
        c.store("locked-h", "one")
        c.store("locked-h", "two")
        c.lock()
        try:
            assert [r["version"] for r in c.history("locked-h")] == [1]
            with pytest.raises(errors.Locked):
                c.history_value("locked-h", 1)
            with pytest.raises(errors.Locked):
                c.history_restore("locked-h", 1)
        finally:
            c.unlock(PASSPHRASE)
        assert c.history_value("locked-h", 1)["value"] == "one"


def test_reads_and_restores_are_audited(shared: AgentProcess) -> None:
    with shared.client() as c:
        c.store("audited-h", "one")
        c.store("audited-h", "two")
        c.history_value("audited-h", 1)
        c.history_restore("audited-h", 1)
        with pytest.raises(errors.NotFound):
            c.history_value("audited-h", 9)

        def seen() -> list[tuple[str, str]]:
            return [(r["op"], r["result"]) for r in c.audit(platform="audited-h") if r["op"].startswith("history")]

        deadline = time.monotonic() + 10
        while len(seen()) < 2 and time.monotonic() < deadline:  # the log is written within a second
            time.sleep(0.1)
        assert ("history_value", "ok") in seen() and ("history_restore", "ok") in seen()
    with shared.client() as c:
        rows = c.audit()
    assert any(r["op"] == "history_value" and r["result"] == "not_found" for r in rows)


def test_a_previous_value_never_opens_as_the_current_one(tmp_path: Path) -> None:
    a = AgentProcess().start()
    try:
        a.init_passphrase()
        with a.client() as c:
            c.store("swap", "old-secret")
            c.store("swap", "new-secret")
        a.stop()
        with vault_store(a.home) as store:
            [kept] = store.history(("swap", "api-key"))
        db = sqlite3.connect(a.home / "data" / "credential-agent" / "vault.sqlite3")
        with db:  # an attacker with the file rolls the value back to the kept token
            db.execute("UPDATE credentials SET value = ? WHERE platform = 'swap'", (kept.sealed,))
        db.close()
        a.start()
        with a.client() as c:
            c.unlock(PASSPHRASE)
            with pytest.raises(errors.IntegrityError):
                c.get("swap")
            assert c.history_value("swap", 1)["value"] == "old-secret"
    finally:
        a.cleanup()


def test_limits_from_the_config_hold() -> None:
    a = AgentProcess(env={"CREDENTIAL_AGENT_HISTORY_KEEP": "3", "CREDENTIAL_AGENT_HISTORY_MAX_AGE": "2"}).start()
    try:
        a.init_passphrase()
        for i in range(6):
            with a.client() as c:
                c.store("bounded", f"v{i}")
        assert versions(a, "bounded") == ["v4", "v3", "v2"]
        time.sleep(2.2)  # past max_age: the next write prunes every name's older versions
        with a.client() as c:
            c.store("other", "x")
            c.store("other", "y")
            assert c.history("bounded") == []
            assert [r["platform"] for r in c.history()] == ["other"]
    finally:
        a.cleanup()


def test_no_history_when_the_config_keeps_none() -> None:
    a = AgentProcess(env={"CREDENTIAL_AGENT_HISTORY_KEEP": "0"}).start()
    try:
        a.init_passphrase()
        with a.client() as c:
            c.store("none", "v1")
            c.store("none", "v2")
            c.delete("none")
            assert c.history() == []
            c.store("none-2", "v1")
        rm = a.cli("rm", "none-2")
        assert rm.returncode == 0 and rm.stdout == "deleted none-2/api-key\n"
        assert "history" not in rm.stderr  # nothing is kept, so nothing to undo with
    finally:
        a.cleanup()


def test_rotation_reseals_history_and_a_restart_keeps_it(tmp_path: Path) -> None:
    a = AgentProcess().start()
    try:
        a.init_passphrase()
        with a.client() as c:
            c.store("rotated", "first", metadata={"n": 1})
            c.store("rotated", "second")
            c.delete("rotated")
        with vault_store(a.home) as store:
            before = [h.sealed for h in store.history()]
        with a.client(timeout=60) as c:
            c.rotate_key(PASSPHRASE, "another long passphrase")
        with vault_store(a.home) as store:
            after = [h.sealed for h in store.history()]
        assert len(after) == len(before) == 2 and not set(after) & set(before)
        a.stop()
        a.start()
        with a.client(timeout=60) as c:
            c.unlock("another long passphrase")
            assert versions(a, "rotated") == ["second", "first"]
            assert c.history_value("rotated", 2)["metadata"] == {"n": 1}
    finally:
        a.cleanup()


def test_no_value_in_the_vault_file_or_the_log(shared: AgentProcess) -> None:
    with shared.client() as c:
        c.store("plain", "NEEDLE-old-value-1234")
        c.store("plain", "NEEDLE-new-value-5678")
        c.delete("plain")
    data = shared.home / "data" / "credential-agent"
    for f in data.iterdir():
        assert b"NEEDLE" not in f.read_bytes(), f
    assert "NEEDLE" not in shared.log()
