"""The local vault: one SQLite database, only ever opened by the agent.

Rules of this module (on top of ``agent.stores``'):
- file 0600 in a 0700 directory; every write is one transaction (``put_many``: a group
  of writes, one transaction), and WAL with ``synchronous=FULL`` makes a write durable
  once it is acknowledged;
- a data directory that cannot be written leaves the vault readable: writes say why
  they fail, and the first write after it became writable again reopens it;
- the file opened is the file at the path, or no write happens: each write first
  checks that the path still names the file opened (a ``rm -rf`` of the data dir, a
  restore copied over it, a move), and refuses with one line if not (``replaced``).
"""

from __future__ import annotations

import errno
import os
import sqlite3
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from agent.stores import AuditRow, HistoryLimits, HistoryRow, Row, sqlite_history
from client import errors, paths

__all__ = ["SqliteStore", "SCHEMA_VERSION"]

# 2: the audit log's caller and command columns (a version-1 vault gains them on open)
# 3: the history table (agent.stores.sqlite_history; created on open like the others)
SCHEMA_VERSION: Final = 3

_SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS credentials (
    platform        TEXT NOT NULL,
    credential_type TEXT NOT NULL,
    value           BLOB NOT NULL,
    metadata        BLOB NOT NULL,
    created         REAL NOT NULL,
    updated         REAL NOT NULL,
    expires         REAL,
    PRIMARY KEY (platform, credential_type)
);
CREATE TABLE IF NOT EXISTS audit (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    ts              REAL NOT NULL,
    op              TEXT NOT NULL,
    platform        TEXT,
    credential_type TEXT,
    pid             INTEGER,
    uid             INTEGER,
    exe             TEXT,
    result          TEXT NOT NULL,
    count           INTEGER NOT NULL DEFAULT 1,
    last_ts         REAL,
    caller          TEXT,
    command         TEXT
);
CREATE INDEX IF NOT EXISTS audit_ts ON audit(ts);
"""
    + sqlite_history.SCHEMA
)

# columns added after version 1, in order: (version, table, column, type)
_ADDED: Final = ((2, "audit", "caller", "TEXT"), (2, "audit", "command", "TEXT"))

# errno values that mean "this file system or directory cannot be written"
_NOT_WRITABLE: Final = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})


def _create_private_file(path: Path) -> None:
    """Create the file 0600 before SQLite opens it, so it is never readable by others."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    os.close(fd)


def _identity(path: Path) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


def _columns(db: sqlite3.Connection, table: str) -> set[str]:
    return {r[1] for r in db.execute(f"PRAGMA table_info({table})")}


def _migrate(db: sqlite3.Connection) -> None:
    """Bring a vault of an older schema up to ``SCHEMA_VERSION``, in one transaction."""
    if db.execute("PRAGMA user_version").fetchone()[0] >= SCHEMA_VERSION:
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        for _, table, column, kind in _ADDED:
            if column not in _columns(db, table):
                db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def _last_part(value: str | None) -> str | None:
    """What ``agent audit --by`` matches besides the whole value: a path's last part,
    a module's name (``-m pkg.mod`` -> ``pkg.mod``)."""
    if value is None:
        return None
    return value[3:] if value.startswith("-m ") else value.rpartition("/")[2]


_INSERT = (
    "INSERT INTO credentials(platform, credential_type, value, metadata, created, updated, expires) "
    "VALUES (?, ?, ?, ?, ?, ?, ?)"
)
# a write: a new row, or the row's value, metadata and times replaced (its created time kept)
_UPSERT = (
    "INSERT INTO credentials(platform, credential_type, value, metadata, created, updated, expires) "
    "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(platform, credential_type) DO UPDATE SET "
    "value = excluded.value, metadata = excluded.metadata, updated = excluded.updated, "
    "expires = excluded.expires"
)
_INSERT_OR_REPLACE = (
    "INSERT OR REPLACE INTO credentials(platform, credential_type, value, metadata, created, "
    "updated, expires) VALUES (?, ?, ?, ?, ?, ?, ?)"
)


class SqliteStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        # why the vault is open read-only (a read-only or unwritable data directory), else None
        self.read_only: str | None = None
        # why the file at the path is no longer the one opened (deleted, moved, replaced), else None
        self.replaced: str | None = None
        self.history_limits = HistoryLimits()
        paths.ensure_private_dir(path.parent)
        try:
            self._db = self._open_rw()
        except errors.StorageError as e:
            if not path.exists() or not isinstance(e.__cause__, OSError) or e.__cause__.errno not in _NOT_WRITABLE:
                raise
            # keep serving what is stored: reads work, writes say why they cannot
            self.read_only = e.__cause__.strerror or "not writable"
            self._db = self._open_ro()
        self._identity = _identity(path)

    def _open_rw(self) -> sqlite3.Connection:
        db = None
        try:
            _create_private_file(self.path)
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA busy_timeout=5000")
            db.executescript(_SCHEMA)
            _migrate(db)
            return self._ready(db)
        except (sqlite3.Error, OSError) as e:
            if db is not None:
                db.close()
            raise errors.StorageError(f"cannot open the vault at {self.path}: {e}") from e

    def _ready(self, db: sqlite3.Connection) -> sqlite3.Connection:
        db.create_function("last_part", 1, _last_part, deterministic=True)
        return db

    def _open_ro(self) -> sqlite3.Connection:
        """Open for reading where nothing may be written, not even SQLite's WAL index."""
        uri = f"file:{urllib.parse.quote(str(self.path))}?mode=ro"
        # a clean shutdown leaves no WAL; then nothing can change the file under us and
        # immutable=1 spares SQLite the -shm file it could not create here
        candidates = [uri] if Path(f"{self.path}-wal").exists() else [uri, uri + "&immutable=1"]
        failure: sqlite3.Error | None = None
        for candidate in candidates:
            try:
                db = sqlite3.connect(candidate, uri=True, isolation_level=None, check_same_thread=False)
                db.execute("SELECT count(*) FROM credentials").fetchone()
                return self._ready(db)
            except sqlite3.Error as e:
                failure = e
        raise errors.StorageError(f"cannot open the read-only vault at {self.path}: {failure}") from failure

    def check_in_place(self) -> None:
        if self.replaced is None:
            try:
                now = _identity(self.path)
            except OSError:
                now = None
            if now != self._identity:
                self.replaced = "deleted or moved" if now is None else "replaced by another file"
        if self.replaced is not None:
            raise errors.StorageError(
                f"the vault file {self.path} was {self.replaced} while the agent ran; nothing was written "
                "(restart the agent to use what is at that path now: `agent stop`, then `agent start`)"
            )

    def _writable(self) -> None:
        """Before a write: the file is still the one at the path, and can be written (reopened
        read-write if the directory became writable again)."""
        self.check_in_place()
        if self.read_only is None:
            return
        try:
            db = self._open_rw()
        except errors.StorageError:
            raise errors.StorageError(
                f"the vault at {self.path} is read-only ({self.read_only}); stored credentials can still be read"
            ) from None
        self._db.close()
        self._db, self.read_only = db, None
        self._identity = _identity(self.path)

    def __repr__(self) -> str:
        return f"SqliteStore({str(self.path)!r})"

    def close(self) -> None:
        self._db.close()

    # --- meta: key source, wrapped key, key check, vault id ---------------------
    def meta(self) -> dict[str, bytes]:
        return {k: bytes(v) for k, v in self._db.execute("SELECT key, value FROM meta")}

    def set_meta_many(self, items: Mapping[str, bytes]) -> None:
        with self._write():
            self._db.executemany(
                "INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                list(items.items()),
            )

    # --- credentials -------------------------------------------------------------
    def rows(self) -> list[Row]:
        cur = self._db.execute(
            "SELECT platform, credential_type, value, metadata, created, updated, expires FROM credentials"
        )
        return [Row(p, t, bytes(v), bytes(m), c, u, e) for p, t, v, m, c, u, e in cur]

    def stamps(self) -> list[tuple[str, str, float, float, float | None]]:
        cur = self._db.execute("SELECT platform, credential_type, created, updated, expires FROM credentials")
        return cur.fetchall()

    def count(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM credentials").fetchone()[0])

    def put(self, row: Row, old: HistoryRow | None = None) -> None:
        self.put_many([(row, old)])

    def put_many(self, rows: Sequence[tuple[Row, HistoryRow | None]]) -> None:
        with self._write():
            for row, old in rows:
                if old is not None:
                    sqlite_history.add(self._db, old, self.history_limits)
                self._db.execute(
                    _UPSERT,
                    (row.platform, row.credential_type, row.value, row.metadata, row.created, row.updated, row.expires),
                )

    def delete(self, platform: str, ctype: str, old: HistoryRow | None = None) -> bool:
        with self._write():
            cur = self._db.execute(
                "DELETE FROM credentials WHERE platform = ? AND credential_type = ?", (platform, ctype)
            )
            if old is not None and cur.rowcount > 0:
                sqlite_history.add(self._db, old, self.history_limits)
        return cur.rowcount > 0

    def history(self, key: tuple[str, str] | None = None, limit: int = 1000) -> list[HistoryRow]:
        if "history" not in self._tables():  # a read-only vault of an older schema
            return []
        return sqlite_history.select(self._db, key, limit)

    def _tables(self) -> set[str]:
        return {r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}

    def replace_all(
        self,
        rows: list[Row],
        meta: Mapping[str, bytes],
        before_commit: Callable[[], None] | None = None,
        drop_meta: tuple[str, ...] = (),
        history: Sequence[HistoryRow] = (),
    ) -> None:
        """Rewrite every row and ``history``'s sealed bytes, set and drop some meta, in one
        transaction (key rotation).

        ``before_commit`` runs inside the transaction, after every write (a test hook).
        """
        with self._write():
            self._db.executemany("DELETE FROM meta WHERE key = ?", [(k,) for k in drop_meta])
            for row in rows:
                self._db.execute(
                    "UPDATE credentials SET value = ?, metadata = ? WHERE platform = ? AND credential_type = ?",
                    (row.value, row.metadata, row.platform, row.credential_type),
                )
            sqlite_history.reseal(self._db, history)
            self._db.executemany(
                "INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                list(meta.items()),
            )
            if before_commit is not None:
                before_commit()

    def rename(
        self,
        moves: list[tuple[tuple[str, str], Row]],
        before_commit: Callable[[], None] | None = None,
        *,
        replace: bool = False,
        old: HistoryRow | None = None,
        history: Sequence[HistoryRow] = (),
    ) -> None:
        """Rows under new names, in one transaction (``agent mv``, the canonical platform names);
        ``old``, the value a replaced row had, goes into the history.

        ``before_commit`` runs inside the transaction, after every write (a test hook).
        """
        with self._write():
            self._db.executemany(
                "DELETE FROM credentials WHERE platform = ? AND credential_type = ?", [old for old, _ in moves]
            )
            for _, row in moves:
                try:
                    self._db.execute(
                        _INSERT_OR_REPLACE if replace else _INSERT,
                        (
                            row.platform,
                            row.credential_type,
                            row.value,
                            row.metadata,
                            row.created,
                            row.updated,
                            row.expires,
                        ),
                    )
                except sqlite3.IntegrityError:
                    raise errors.AlreadyExists(
                        f"cannot rename to {row.platform}/{row.credential_type}: that name is taken"
                    ) from None
            if old is not None:
                sqlite_history.add(self._db, old, self.history_limits)
            sqlite_history.move(self._db, history)
            if before_commit is not None:
                before_commit()

    def delete_meta(self, key: str) -> None:
        with self._write():
            self._db.execute("DELETE FROM meta WHERE key = ?", (key,))

    # --- audit log: names, callers and results, never values ---------------------------
    def add_audit(self, rows: list[AuditRow], keep: int) -> None:
        """Append ``rows`` and prune to the newest ``keep`` rows, in one transaction."""
        with self._write():
            self._db.executemany(
                "INSERT INTO audit(ts, op, platform, credential_type, pid, uid, exe, result, count, last_ts, "
                "caller, command) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            # ids grow monotonically (AUTOINCREMENT), so the newest rows have the largest ids
            self._db.execute("DELETE FROM audit WHERE id <= (SELECT max(id) FROM audit) - ?", (keep,))

    def audit(self, since: float | None, platform: str | None, limit: int, by: str | None = None) -> list[AuditRow]:
        """The newest ``limit`` audit rows matching the filters, oldest first."""
        # a read-only vault of schema 1 has no caller columns (nothing could have filled them)
        newer = "caller" in _columns(self._db, "audit")
        query = (
            "SELECT ts, op, platform, credential_type, pid, uid, exe, result, count, coalesce(last_ts, ts), "
            + ("caller, command " if newer else "NULL, NULL ")
            + "FROM audit WHERE 1"
        )
        params: list[Any] = []
        if by is not None:
            columns = ("exe", "caller", "command") if newer else ("exe",)
            query += " AND ? IN (" + ", ".join(f"{c}, last_part({c})" for c in columns) + ")"
            params.append(by)
        if since is not None:
            query += " AND coalesce(last_ts, ts) >= ?"
            params.append(since)
        if platform is not None:
            query += " AND platform = ?"
            params.append(platform)
        query += " ORDER BY id DESC LIMIT ?"
        params.append(limit)
        rows = [tuple(r) for r in self._db.execute(query, params)]
        rows.reverse()
        return rows

    def _write(self) -> _Transaction:
        self._writable()
        return _Transaction(self._db, self.path)


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, with SQLite/OS failures as ``StorageError``."""

    def __init__(self, db: sqlite3.Connection, path: Path) -> None:
        self._db = db
        self._path = path

    def __enter__(self) -> None:
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as e:
            raise errors.StorageError(f"cannot write the vault at {self._path}: {e}") from e

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        try:
            if exc_type is None:
                self._db.execute("COMMIT")
                return
            self._db.execute("ROLLBACK")
        except sqlite3.Error as e:
            try:
                self._db.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            raise errors.StorageError(f"cannot write the vault at {self._path}: {e}") from e
        if isinstance(exc, sqlite3.Error):
            raise errors.StorageError(f"cannot write the vault at {self._path}: {exc}") from exc
