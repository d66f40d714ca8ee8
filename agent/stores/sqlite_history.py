"""The local vault's history table: previous values of each credential, in SQL.

Rules of this module:
- every function runs inside a transaction ``agent.stores.sqlite`` opened: adding a
  previous value, and pruning what the limits no longer keep, commit with the write
  that replaced the value, or not at all;
- rows hold sealed bytes, names, times and the replacing program, never plaintext.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from typing import Final

from agent.stores import HistoryLimits, HistoryRow

__all__ = ["SCHEMA", "add", "select", "move", "reseal"]

SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS history (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    platform        TEXT NOT NULL,
    credential_type TEXT NOT NULL,
    sealed          BLOB NOT NULL,
    set_at          REAL NOT NULL,
    replaced        REAL NOT NULL,
    reason          TEXT NOT NULL,
    by              TEXT,
    caller          TEXT
);
CREATE INDEX IF NOT EXISTS history_name ON history(platform, credential_type, id);
"""

# each row's version: its place among its name's rows, newest first, counted through the
# (platform, credential_type, id) index, so a listing of the newest rows reads only those
_SELECT: Final = (
    "SELECT id, platform, credential_type, sealed, set_at, replaced, reason, by, caller, "
    "(SELECT count(*) FROM history AS newer WHERE newer.platform = h.platform "
    "AND newer.credential_type = h.credential_type AND newer.id >= h.id) FROM history AS h "
)
_ALL: Final = _SELECT + "ORDER BY id DESC LIMIT ?"
_OF_NAME: Final = _SELECT + "WHERE platform = ? AND credential_type = ? ORDER BY id DESC LIMIT ?"


def add(db: sqlite3.Connection, row: HistoryRow, limits: HistoryLimits) -> None:
    """Keep ``row`` (unless the limits keep no history), then prune its name to the limits."""
    if limits.versions > 0:
        db.execute(
            "INSERT INTO history(platform, credential_type, sealed, set_at, replaced, reason, by, caller) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (row.platform, row.credential_type, row.sealed, row.set_at, row.replaced, row.reason, row.by, row.caller),
        )
    prune(db, (row.platform, row.credential_type), limits)


def prune(db: sqlite3.Connection, key: tuple[str, str], limits: HistoryLimits) -> None:
    """Drop what the limits no longer keep: beyond ``versions`` of this name, and anything
    of any name replaced longer than ``max_age`` ago (the table stays small without a timer)."""
    db.execute(
        "DELETE FROM history WHERE platform = ? AND credential_type = ? AND id NOT IN "
        "(SELECT id FROM history WHERE platform = ? AND credential_type = ? ORDER BY id DESC LIMIT ?)",
        (*key, *key, limits.versions),
    )
    if limits.max_age > 0:
        db.execute("DELETE FROM history WHERE replaced < ?", (time.time() - limits.max_age,))


def select(db: sqlite3.Connection, key: tuple[str, str] | None, limit: int) -> list[HistoryRow]:
    """Newest first: one name's previous values, or every name's."""
    cur = db.execute(_ALL, (limit,)) if key is None else db.execute(_OF_NAME, (*key, limit))
    return [HistoryRow(p, t, bytes(s), a, r, why, by, c, i, v) for i, p, t, s, a, r, why, by, c, v in cur]


def move(db: sqlite3.Connection, rows: Sequence[HistoryRow]) -> None:
    """Give each row (by id) its new name and the sealed bytes bound to it (a rename)."""
    db.executemany(
        "UPDATE history SET platform = ?, credential_type = ?, sealed = ? WHERE id = ?",
        [(r.platform, r.credential_type, r.sealed, r.id) for r in rows],
    )


def reseal(db: sqlite3.Connection, rows: Sequence[HistoryRow]) -> None:
    """Write each row's new sealed bytes over its old ones (a rotation of the master key)."""
    db.executemany("UPDATE history SET sealed = ? WHERE id = ?", [(r.sealed, r.id) for r in rows])
