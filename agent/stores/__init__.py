"""Where credentials are kept at rest: the ``Store`` protocol and its row types.

Rules of every store:
- it holds sealed rows (``agent.crypto.seal``), names and times, never plaintext;
  it knows nothing of keys or cryptography;
- every write is one transaction, durable once the call returns;
- it is used from one thread at a time (the agent's storage thread);
- names and timestamps are readable without the master key, so ``list`` works
  while locked.

``sqlite.SqliteStore`` is the local vault. A store of another kind (a team vault)
implements the same methods; ``tests/contracts/test_store_contract.py`` is the suite it
must pass.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

__all__ = ["Row", "Who", "NOBODY", "HistoryRow", "HistoryLimits", "AuditRow", "Store", "VaultMeta"]


@dataclasses.dataclass(frozen=True)
class Row:
    platform: str
    credential_type: str
    value: bytes  # Fernet token
    metadata: bytes  # Fernet token
    created: float
    updated: float
    expires: float | None

    def __repr__(self) -> str:
        return f"Row({self.platform!r}, {self.credential_type!r}, <sealed>)"


# The program that replaced or deleted a value: its executable, as the kernel names it,
# and the Python script or module it says it runs (``agent.transport.callers``; a
# process can rewrite its own argv, so that part is a claim).
Who = tuple[str | None, str | None]
NOBODY: Who = (None, None)


@dataclasses.dataclass(frozen=True)
class HistoryRow:
    """A value a credential had before it was replaced or deleted (``agent history``).

    ``sealed`` is one token of the old value, metadata and expiry, bound to the name and to
    the field ``history`` (``agent.crypto.seal``): it never opens as a current row. The
    times and ``reason``/``by`` are readable while locked, as a row's times are."""

    platform: str
    credential_type: str
    sealed: bytes  # Fernet token
    set_at: float  # when that value was stored (the old row's updated time)
    replaced: float  # when it stopped being the current value
    reason: str  # "replaced" | "deleted"
    by: str | None  # the executable that replaced or deleted it, as the kernel named it
    caller: str | None  # the script or module that process said it runs
    id: int = 0  # the store's, once written; newest rows have the largest
    version: int = 0  # as read: its place among its name's rows, newest first, from 1

    def __repr__(self) -> str:
        return f"HistoryRow({self.platform!r}, {self.credential_type!r}, {self.reason!r}, <sealed>)"


@dataclasses.dataclass(frozen=True)
class HistoryLimits:
    """How much history a store keeps: ``versions`` per name (0: none), each for at most
    ``max_age`` seconds after it was replaced (0: no age limit)."""

    versions: int = 10
    max_age: float = 0.0


# One audit row: (ts, op, platform, credential_type, pid, uid, exe, result, count, last_ts, caller,
# command). `count` identical events (same caller, op, name and result) between ts and last_ts;
# caller: a Python caller's script or `-m module`; command: what `agent exec`/`run` started.
# Never a value.
AuditRow = tuple[
    float, str, str | None, str | None, int | None, int | None, str | None, str, int, float, str | None, str | None
]


class Store(Protocol):
    # why the store cannot be written (a read-only data directory), else None
    read_only: str | None
    # why its file is no longer the one at its path (deleted, moved, replaced), else None
    replaced: str | None

    def close(self) -> None: ...

    def check_in_place(self) -> None:
        """``StorageError`` once the store's file is no longer the one at its path (deleted,
        moved or replaced while the agent ran); every write checks it first, so nothing is
        acknowledged that would be gone at the next start."""
        ...

    # --- meta: key source, wrapped key, key check, vault id
    def meta(self) -> dict[str, bytes]: ...

    def set_meta_many(self, items: Mapping[str, bytes]) -> None: ...

    def delete_meta(self, key: str) -> None: ...

    # how much history writes keep (pruned in the transaction that adds to it)
    history_limits: HistoryLimits

    # --- credentials
    def rows(self) -> list[Row]: ...

    def stamps(self) -> list[tuple[str, str, float, float, float | None]]:
        """Every row's (platform, credential_type, created, updated, expires): no token read."""
        ...

    def count(self) -> int:
        """How many credentials the vault holds."""
        ...

    def put(self, row: Row, old: HistoryRow | None = None) -> None:
        """Write ``row``; ``old``, the value it replaces, goes into the history in the same transaction."""
        ...

    def put_many(self, rows: Sequence[tuple[Row, HistoryRow | None]]) -> None:
        """``put`` of each (row, old), in order, in one transaction: all of them or none."""
        ...

    def delete(self, platform: str, ctype: str, old: HistoryRow | None = None) -> bool: ...

    def replace_all(
        self,
        rows: list[Row],
        meta: Mapping[str, bytes],
        before_commit: Callable[[], None] | None = None,
        drop_meta: tuple[str, ...] = (),
        history: Sequence[HistoryRow] = (),
    ) -> None:
        """Rewrite the sealed fields of every row and of ``history`` (by id), set and drop
        meta, all or nothing."""
        ...

    # --- history: previous values, newest first
    def history(self, key: tuple[str, str] | None = None, limit: int = 1000) -> list[HistoryRow]: ...

    def rename(
        self,
        moves: list[tuple[tuple[str, str], Row]],
        before_commit: Callable[[], None] | None = None,
        *,
        replace: bool = False,
        old: HistoryRow | None = None,
        history: Sequence[HistoryRow] = (),
    ) -> None:
        """Replace each row named by the first item of a move with the second (a new
        name, re-sealed), all or nothing: a crash leaves the old names or the new ones,
        never both or none. A new name that is taken is ``AlreadyExists``, or with
        ``replace`` the row there is replaced (``old``, its value, goes into the history).
        ``history``: previous values that move with the row (their name and sealed bytes, by id)."""
        ...

    # --- the audit log: names, callers and results, never values
    def add_audit(self, rows: list[AuditRow], keep: int) -> None: ...

    def audit(self, since: float | None, platform: str | None, limit: int, by: str | None = None) -> list[AuditRow]:
        """``by``: only rows whose executable, caller or command is this (a path or its
        last part, or a module's name)."""
        ...


class VaultMeta:
    """The vault's meta (key source, wrapped key, key check, vault id): read once at
    start, kept in memory, written through the store on the storage thread."""

    def __init__(self, store: Store, run: Callable[..., Awaitable[Any]]) -> None:
        self._store = store
        self._run = run
        self.values = store.meta()

    def __repr__(self) -> str:
        return f"VaultMeta(keys={sorted(self.values)!r})"

    def get(self, name: str) -> bytes | None:
        return self.values.get(name)

    def vault_id(self) -> str:
        return self.values.get("vault_id", b"").decode()

    async def save(self, items: Mapping[str, bytes]) -> None:
        await self._run(self._store.set_meta_many, dict(items))
        self.values.update(items)

    async def drop(self, name: str) -> None:
        await self._run(self._store.delete_meta, name)
        self.values.pop(name, None)

    def committed(self, meta: Mapping[str, bytes | None]) -> None:
        """Take in ``meta`` that a store transaction wrote (None: dropped)."""
        for name, value in meta.items():
            if value is None:
                self.values.pop(name, None)
            else:
                self.values[name] = value
