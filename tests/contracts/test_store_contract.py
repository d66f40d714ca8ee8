"""The contract every store keeps (agent.stores.Store), as keyring's BackendBasicTests.

Each store subclasses ``StoreContract`` with a ``store`` fixture. The local vault runs
on a real SQLite file; a store that fronts another system runs against that system.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.stores import AuditRow, HistoryLimits, HistoryRow, Row, Store
from agent.stores.sqlite import SqliteStore
from client import errors


def row(platform: str, ctype: str = "api-key", value: bytes = b"sealed-value", when: float = 1.0) -> Row:
    return Row(platform, ctype, value, b"sealed-metadata", when, when, None)


def old(platform: str, sealed: bytes = b"sealed-history", when: float = 1.0, reason: str = "replaced") -> HistoryRow:
    return HistoryRow(platform, "api-key", sealed, when, when + 1, reason, "/usr/bin/python3", "/srv/train.py")


def audit_row(ts: float, op: str = "get", platform: str | None = "runpod", caller: str | None = None,
              command: str | None = None) -> AuditRow:
    return (ts, op, platform, "api-key", 100, 1000, "/usr/bin/python3", "ok", 1, ts, caller, command)


class StoreContract:
    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[Store]:
        raise NotImplementedError

    def reopen(self, store: Store) -> Store:
        """The same store as a restarted agent sees it."""
        raise NotImplementedError

    def test_a_new_store_is_empty_and_writable(self, store: Store) -> None:
        assert store.rows() == [] and store.meta() == {} and store.read_only is None

    def test_put_then_rows(self, store: Store) -> None:
        store.put(row("runpod"))
        store.put(row("wandb", "api-key", b"other", 2.0))
        assert sorted(store.rows(), key=lambda r: r.platform) == [row("runpod"), row("wandb", "api-key", b"other", 2.0)]

    def test_put_many_writes_in_order_with_their_history(self, store: Store) -> None:
        store.put(row("runpod", value=b"first"))
        store.put_many([
            (row("runpod", value=b"second", when=2.0), old("runpod", b"sealed-first")),
            (row("wandb"), None),
            (row("runpod", value=b"third", when=3.0), old("runpod", b"sealed-second")),
        ])
        assert {r.platform: r.value for r in store.rows()} == {"runpod": b"third", "wandb": b"sealed-value"}
        assert [h.sealed for h in store.history(("runpod", "api-key"))] == [b"sealed-second", b"sealed-first"]

    def test_put_many_is_one_transaction_all_or_nothing(self, store: Store) -> None:
        broken = Row(None, "api-key", b"v", b"m", 1.0, 1.0, None)  # type: ignore[arg-type]  # NOT NULL fails
        with pytest.raises(errors.StorageError):
            store.put_many([(row("runpod"), None), (row("wandb"), old("wandb")), (broken, None)])
        assert store.rows() == [] and store.history() == []
        store.put_many([(row("runpod"), None)])  # the store goes on
        assert [r.platform for r in store.rows()] == ["runpod"]

    def test_put_replaces_a_row_but_keeps_its_created_time(self, store: Store) -> None:
        store.put(row("runpod", when=1.0))
        store.put(dataclasses.replace(row("runpod", value=b"new", when=5.0), expires=9.0))
        (r,) = store.rows()
        assert (r.value, r.created, r.updated, r.expires) == (b"new", 1.0, 5.0, 9.0)

    def test_types_of_one_platform_are_separate_rows(self, store: Store) -> None:
        store.put(row("runpod", "api-key"))
        store.put(row("runpod", "api-secret"))
        assert {r.credential_type for r in store.rows()} == {"api-key", "api-secret"}

    def test_delete_says_whether_there_was_a_row(self, store: Store) -> None:
        store.put(row("runpod"))
        assert store.delete("runpod", "api-key") is True
        assert store.delete("runpod", "api-key") is False
        assert store.rows() == []

    def test_rename_moves_a_row_and_replaces_the_target(self, store: Store) -> None:
        store.put(row("runpod", when=1.0))
        store.put(row("lambdalabs", value=b"older", when=2.0))
        store.rename([(("runpod", "api-key"), dataclasses.replace(row("lambdalabs", value=b"moved", when=1.0),
                                                                  expires=9.0))], replace=True)
        (r,) = self.reopen(store).rows()
        assert (r.platform, r.value, r.created, r.expires) == ("lambdalabs", b"moved", 1.0, 9.0)

    def test_writes_are_durable(self, store: Store) -> None:
        store.put(row("runpod"))
        store.set_meta_many({"vault_id": b"abc"})
        again = self.reopen(store)
        assert again.rows() == [row("runpod")] and again.meta() == {"vault_id": b"abc"}

    def test_meta_set_and_delete(self, store: Store) -> None:
        store.set_meta_many({"a": b"1", "b": b"2"})
        store.set_meta_many({"a": b"3"})
        store.delete_meta("b")
        store.delete_meta("never-set")
        assert store.meta() == {"a": b"3"}

    def test_replace_all_rewrites_every_row_and_the_meta_at_once(self, store: Store) -> None:
        store.put(row("runpod"))
        store.put(row("wandb"))
        store.set_meta_many({"key_check": b"old", "pending": b"x"})
        store.replace_all([dataclasses.replace(r, value=b"resealed") for r in store.rows()], {"key_check": b"new"},
                          drop_meta=("pending",))
        assert {r.value for r in store.rows()} == {b"resealed"}
        assert store.meta() == {"key_check": b"new"}

    def test_replace_all_is_all_or_nothing(self, store: Store) -> None:
        store.put(row("runpod"))
        store.set_meta_many({"key_check": b"old"})

        def crash() -> None:
            raise OSError("the disk went away")

        with pytest.raises(OSError):
            store.replace_all([row("runpod", value=b"resealed")], {"key_check": b"new"}, crash)
        assert store.rows() == [row("runpod")] and store.meta() == {"key_check": b"old"}

    def test_rename_moves_rows_to_their_new_names(self, store: Store) -> None:
        store.put(row("HF", when=1.0))
        store.put(row("hf", value=b"newer", when=2.0))
        store.put(row("runpod"))
        store.rename([(("hf", "api-key"), row("huggingface", value=b"newer", when=2.0)),
                      (("HF", "api-key"), row("huggingface-2", when=1.0))])
        assert sorted(store.rows(), key=lambda r: r.platform) == [
            row("huggingface", value=b"newer", when=2.0), row("huggingface-2", when=1.0), row("runpod")]

    def test_rename_is_all_or_nothing(self, store: Store) -> None:
        store.put(row("HF"))
        store.put(row("Wandb"))
        store.put(row("runpod"))
        before = sorted(store.rows(), key=lambda r: r.platform)

        def crash() -> None:
            raise OSError("the disk went away")

        with pytest.raises(OSError):
            store.rename([(("HF", "api-key"), row("huggingface")), (("Wandb", "api-key"), row("wandb"))], crash)
        # onto a name that is taken: refused whole
        with pytest.raises(errors.AlreadyExists, match="runpod/api-key"):
            store.rename([(("HF", "api-key"), row("huggingface")), (("Wandb", "api-key"), row("runpod"))])
        assert sorted(self.reopen(store).rows(), key=lambda r: r.platform) == before

    def test_a_replaced_value_is_kept_with_the_write_newest_first(self, store: Store) -> None:
        store.put(row("runpod", value=b"v1"))
        store.put(row("runpod", value=b"v2"), old("runpod", b"h1"))
        store.put(row("runpod", value=b"v3"), old("runpod", b"h2"))
        store.put(row("wandb"), old("wandb", b"w1"))
        reopened = self.reopen(store)
        kept = reopened.history(("runpod", "api-key"))
        assert [h.sealed for h in kept] == [b"h2", b"h1"]
        assert (kept[0].reason, kept[0].by, kept[0].caller) == ("replaced", "/usr/bin/python3", "/srv/train.py")
        assert [h.sealed for h in reopened.history()] == [b"w1", b"h2", b"h1"]
        assert [h.version for h in reopened.history()] == [1, 1, 2]  # counted within each name
        assert [h.sealed for h in reopened.history(None, limit=1)] == [b"w1"]
        assert [r.value for r in reopened.rows() if r.platform == "runpod"] == [b"v3"]

    def test_a_deleted_value_is_kept_only_when_there_was_a_row(self, store: Store) -> None:
        store.put(row("runpod"))
        assert store.delete("runpod", "api-key", old("runpod", reason="deleted"))
        assert not store.delete("runpod", "api-key", old("runpod", b"never", reason="deleted"))
        assert [(h.sealed, h.reason) for h in self.reopen(store).history()] == [(b"sealed-history", "deleted")]

    def test_history_is_pruned_to_its_limits_in_the_write(self, store: Store) -> None:
        store.history_limits = HistoryLimits(versions=2, max_age=0)
        for i in range(5):
            store.put(row("runpod", value=b"v%d" % i), old("runpod", b"h%d" % i))
        store.put(row("wandb"), old("wandb", b"w"))
        assert [h.sealed for h in store.history(("runpod", "api-key"))] == [b"h4", b"h3"]
        # an age limit drops every name's old versions at the next write
        store.history_limits = HistoryLimits(versions=10, max_age=60)
        store.put(row("other"), dataclasses.replace(old("other", b"recent"), replaced=time.time()))
        assert [h.sealed for h in store.history()] == [b"recent"]
        store.history_limits = HistoryLimits(versions=0)
        store.put(row("runpod"), old("runpod", b"dropped"))
        assert [h.sealed for h in store.history(("runpod", "api-key"))] == []

    def test_replace_all_reseals_history_in_its_transaction(self, store: Store) -> None:
        store.put(row("runpod"))
        store.put(row("runpod"), old("runpod", b"h-old-key"))
        [kept] = store.history()
        with pytest.raises(RuntimeError):
            store.replace_all([row("runpod", value=b"new")], {}, _fail,
                              history=[dataclasses.replace(kept, sealed=b"x")])
        assert [h.sealed for h in self.reopen(store).history()] == [b"h-old-key"]
        store.replace_all([row("runpod", value=b"new")], {}, history=[dataclasses.replace(kept, sealed=b"h-new-key")])
        assert [h.sealed for h in self.reopen(store).history()] == [b"h-new-key"]

    def test_rename_over_a_name_keeps_its_value(self, store: Store) -> None:
        store.put(row("hf"))
        store.put(row("huggingface", value=b"taken"))
        store.rename([(("hf", "api-key"), row("huggingface"))], replace=True, old=old("huggingface", b"taken-h"))
        assert [h.sealed for h in self.reopen(store).history(("huggingface", "api-key"))] == [b"taken-h"]

    def test_audit_keeps_the_newest_rows_oldest_first(self, store: Store) -> None:
        store.add_audit([audit_row(float(t)) for t in range(1, 6)], keep=3)
        assert [r[0] for r in store.audit(None, None, 10)] == [3.0, 4.0, 5.0]
        assert [r[0] for r in store.audit(None, None, 2)] == [4.0, 5.0]

    def test_audit_filters(self, store: Store) -> None:
        store.add_audit([audit_row(1.0), audit_row(2.0, platform="wandb"), audit_row(3.0, op="lock", platform=None)],
                        keep=100)
        assert [r[0] for r in store.audit(2.0, None, 10)] == [2.0, 3.0]
        assert [r[2] for r in store.audit(None, "wandb", 10)] == ["wandb"]

    def test_audit_by_program(self, store: Store) -> None:
        store.add_audit([audit_row(1.0, caller="/srv/ml/train.py"), audit_row(2.0, caller="-m sweeps.agent"),
                         audit_row(3.0, caller="/usr/bin/agent", command="torchrun"), audit_row(4.0)], keep=100)
        assert store.audit(None, None, 10)[0][10:] == ("/srv/ml/train.py", None)
        for by, times in (("train.py", [1.0]), ("/srv/ml/train.py", [1.0]), ("sweeps.agent", [2.0]),
                          ("-m sweeps.agent", [2.0]), ("torchrun", [3.0]), ("python3", [1.0, 2.0, 3.0, 4.0]),
                          ("ml", [])):
            assert [r[0] for r in store.audit(None, None, 10, by)] == times, by

    def test_repr_shows_no_sealed_bytes(self, store: Store) -> None:
        store.put(row("runpod", value=b"SEALED-BYTES"))
        assert "SEALED-BYTES" not in repr(store) + repr(store.rows())


class TestSqliteStore(StoreContract):
    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[Store]:
        s = SqliteStore(tmp_path / "vault" / "vault.sqlite3")
        self.opened = [s]
        yield s
        for each in self.opened:
            each.close()

    def reopen(self, store: Store) -> Store:
        assert isinstance(store, SqliteStore)
        again = SqliteStore(store.path)
        self.opened.append(again)
        return again

    def test_a_file_no_longer_at_its_path_takes_no_write(self, store: Store) -> None:
        assert isinstance(store, SqliteStore)
        store.put(row("runpod"))
        store.check_in_place()  # still the file at its path
        moved = store.path.with_name("elsewhere.sqlite3")
        store.path.rename(moved)
        with pytest.raises(errors.StorageError, match="deleted or moved while the agent ran"):
            store.put(row("wandb"))
        assert store.replaced == "deleted or moved"
        moved.rename(store.path)  # back again: a store that saw it go stays refused (a restart decides)
        with pytest.raises(errors.StorageError):
            store.delete("runpod", "api-key")
        assert [r.platform for r in self.reopen(store).rows()] == ["runpod"]

    def test_file_and_directory_are_private(self, store: Store) -> None:
        assert isinstance(store, SqliteStore)
        assert store.path.stat().st_mode & 0o777 == 0o600
        assert store.path.parent.stat().st_mode & 0o777 == 0o700

    def test_a_failed_write_is_a_storage_error(self, store: Store) -> None:
        assert isinstance(store, SqliteStore)
        store.put(row("runpod"))
        other = self.reopen(store)
        assert isinstance(other, SqliteStore)
        other._db.execute("BEGIN EXCLUSIVE")  # another writer holds the database
        other._db.execute("PRAGMA busy_timeout=0")
        store._db.execute("PRAGMA busy_timeout=0")
        try:
            with pytest.raises(errors.StorageError, match="cannot write the vault"):
                store.put(row("wandb"))
        finally:
            other._db.execute("ROLLBACK")
        assert store.rows() == [row("runpod")]


def _fail() -> None:
    raise RuntimeError("a crash inside the transaction")
