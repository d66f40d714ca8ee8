"""Credentials: get, write (store and update), delete, rename, list, metadata, expiry.

Rules of this module:
- the hot path (``get_cached`` while unlocked) is a dict lookup, no I/O, no decryption;
- every change takes ``LockState.writing()`` and is one store transaction (stores and
  updates that arrive while one commits share the next: ``agent.state.commits``); the
  entry changes only after the store has it, and keeps its plaintext only when no
  lock came meanwhile (``LockState.holds``);
- what a write keeps of the credential it replaces is ``kept_fields``'s, a pure
  function: nothing of a replaced credential is dropped unless the request says so (a
  given field, ``keep`` false on ``store``), and metadata that failed its integrity
  check is never silently replaced by ``{}``;
- a value replaced or deleted is kept as history (``previous``) in the same store
  transaction; ``agent.state.history`` reads it back;
- a rename seals the value and metadata again under the new name (the row binding of
  ``agent.crypto.seal`` puts the name into each token) and deletes the old row in the
  same transaction: a crash leaves one name or the other;
- names are checked by ``client.validation.check_key``; a missing credential is
  ``missing()``'s one message.
"""

from __future__ import annotations

import bisect
import dataclasses
import functools
import itertools
import math
import time
from collections.abc import Iterable, Mapping
from typing import Any, Final

from agent import crypto
from agent.crypto import seal, unseal
from agent.state.entry import Entry, Key
from agent.state.lockstate import LockState
from agent.stores import NOBODY, HistoryRow, Row, Who
from client import errors, protocol
from client.validation import check_credential, check_key, check_metadata

__all__ = [
    "KEEP",
    "Keep",
    "kept_fields",
    "previous",
    "check_expires",
    "missing",
    "get_cached",
    "get",
    "Write",
    "write",
    "delete",
    "rename",
    "describe",
    "check_page",
    "listing",
    "metadata",
]


class Keep:
    """The type of ``KEEP``: an argument not given, as opposed to None (clear it)."""

    def __repr__(self) -> str:
        return "KEEP"


KEEP: Final = Keep()
# names a "did you mean" looks through, at most: a miss in a huge vault stays cheap
MAX_SUGGEST: Final = 5_000


def check_expires(expires: float) -> None:
    """A Unix time every client can format; never echoes the value."""
    if not (math.isfinite(expires) and 0 <= expires <= protocol.MAX_EXPIRES):
        raise errors.BadRequest(f"expires_at must be a Unix time between 0 and {protocol.MAX_EXPIRES:.0f} (year 9999)")


def missing(key: Key, where: str = "", among: Iterable[Key] = ()) -> errors.NotFound:
    """The one way to say a credential is not there; ``where`` adds where it was looked for,
    and a name of ``among`` close to it (a typo: ``huggingfase``) is suggested."""
    return errors.NotFound(f"no credential {key[0]}/{key[1]}{where}{_nearest(key, among)}")


def _nearest(key: Key, among: Iterable[Key]) -> str:
    names = [f"{p}/{t}" for p, t in itertools.islice(among, MAX_SUGGEST)]
    if not names:
        return ""
    import difflib

    close = difflib.get_close_matches(f"{key[0]}/{key[1]}", names, n=1, cutoff=0.8)
    return f"; did you mean {close[0]}?" if close else ""


def kept_fields(
    name: str,
    old: tuple[dict[str, Any] | None, float | None] | None,
    metadata: Mapping[str, Any] | None,
    expires_at: float | Keep | None,
    *,
    keep: bool,
    merge: bool,
) -> tuple[dict[str, Any], float | None]:
    """The metadata and expiry a write of ``name`` stores, given the replaced entry's
    ``old`` (metadata, expiry), or None when there is none.

    ``keep``: metadata not given and an expiry left at ``KEEP`` come from ``old``
    (``update`` always keeps; ``store`` when asked). ``merge``: given metadata is laid
    over ``old``'s instead of replacing it. ``expires_at`` None clears the expiry.
    """
    old_meta, old_expires = old if old is not None else ({}, None)
    if old_meta is None and old is not None and (merge or (keep and metadata is None)):
        raise errors.IntegrityError(
            f"the stored {name} fails its integrity check, so its metadata cannot be kept "
            "(`agent set --clear-meta` drops it); pass metadata to update it, or use store to replace it"
        )
    if metadata is None:
        meta = dict(old_meta or {}) if keep else {}
    else:
        meta = {**(old_meta or {}), **metadata} if merge else dict(metadata)
    if isinstance(expires_at, Keep):
        expires_at = old_expires if keep else None
    return meta, None if expires_at is None else float(expires_at)


def previous(storage: crypto.SecureStorage, key: Key, entry: Entry | None, reason: str, by: Who) -> HistoryRow | None:
    """The history row of ``entry``'s value, about to be replaced or deleted; None when
    there is nothing readable to keep (no entry, or one that fails its integrity check)."""
    if entry is None or entry.value is None or entry.metadata is None:
        return None
    payload = [entry.value, entry.metadata, entry.expires, entry.created]
    sealed = seal(storage, *key, "history", payload)
    return HistoryRow(key[0], key[1], sealed, entry.updated, time.time(), reason, *by)


def _resealed(storage: crypto.SecureStorage, old: Key, new: Key, h: HistoryRow) -> bytes | None:
    """``h`` sealed under ``new``; None for one that fails its check (it stays, unreadable, as it was)."""
    try:
        return seal(storage, *new, "history", unseal(storage, *old, "history", h.sealed))
    except errors.IntegrityError:
        return None


# --- reads -------------------------------------------------------------------------------
def get_cached(s: LockState, key: Key) -> str:
    """The hot path: a dict lookup while unlocked."""
    entry = s.entries.get(key)
    value = None if entry is None else entry.value
    if value is None:
        check_key(*key)
        if entry is not None and entry.corrupt:
            raise errors.IntegrityError()
        raise missing(key, among=s.entries)
    s.autolock.last_use = time.monotonic()
    return value


async def get(s: LockState, key: Key) -> str:
    await s.storage()
    return get_cached(s, key)


def describe(s: LockState, key: Key) -> dict[str, Any]:
    entry = s.entries[key]
    described: dict[str, Any] = {
        "platform": key[0],
        "credential_type": key[1],
        "created": entry.created,
        "updated": entry.updated,
        "expires_at": entry.expires,
    }
    if not s.locked:
        described["metadata"] = entry.metadata
    return described


def check_page(offset: int, limit: int | None, after: Any) -> Key | None:
    """The page a ``list`` asks for, checked; its cursor ``after`` as a name, or None."""
    if offset < 0 or (limit is not None and limit < 0):
        raise errors.BadRequest("list offset and limit must not be negative")
    if after is None:
        return None
    if not (len(after) == 2 and all(isinstance(n, str) for n in after)):
        raise errors.BadRequest("list after must be a [platform, credential_type] pair")
    return (after[0], after[1])


def listing(s: LockState, offset: int = 0, limit: int | None = None, after: Key | None = None) -> list[dict[str, Any]]:
    """Every credential's name and timestamps, plus metadata while unlocked; never values.

    ``limit`` entries in name order: those after the name ``after`` (a cursor: a change
    between two pages neither repeats nor skips an entry that was there throughout),
    else from ``offset``. The names are kept in order (``Entries.ordered``): a page costs
    its own entries and a bisection, not a sort of the vault."""
    check_page(offset, limit, None)
    names = s.entries.ordered()
    start = offset if after is None else bisect.bisect_right(names, after)
    return [describe(s, k) for k in (names[start:] if limit is None else names[start : start + limit])]


async def metadata(s: LockState, key: Key) -> dict[str, Any]:
    check_key(*key)
    await s.storage()
    entry = s.entries.get(key)
    if entry is None:
        raise missing(key, among=s.entries)
    if entry.corrupt:
        raise errors.IntegrityError()
    return describe(s, key)


# --- changes -----------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, slots=True, repr=False)
class Write:
    """One store or update, its arguments checked, waiting for its group's transaction."""

    key: Key
    value: str
    metadata: Mapping[str, Any] | None
    expires_at: float | Keep | None
    must_exist: bool
    keep: bool
    merge: bool
    by: Who

    def __repr__(self) -> str:
        return f"Write({self.key[0]}/{self.key[1]})"  # never the value


async def write(
    s: LockState,
    key: Key,
    value: str,
    *,
    metadata: Mapping[str, Any] | None = None,
    expires_at: float | Keep | None = KEEP,
    validate: bool = True,
    must_exist: bool = False,
    keep: bool = False,
    merge: bool = False,
    by: Who = NOBODY,
) -> dict[str, Any]:
    """Store (``must_exist`` false) or update a credential. What it keeps of the one
    it replaces is ``kept_fields``'s: an update keeps the metadata and expiry not
    given, a store only with ``keep``; ``merge`` lays metadata over the old. The
    replaced value goes into the history (``by``: the program that replaced it).

    The write joins the next group commit (``agent.state.commits``): it is answered
    once the transaction that holds it, and the writes that came with it, committed."""
    key = check_key(*key)
    if len(value) > protocol.MAX_VALUE:
        raise errors.BadRequest(f"the value is longer than {protocol.MAX_VALUE} characters")
    if metadata is not None:
        check_metadata(metadata)
    if expires_at is not None and not isinstance(expires_at, Keep):
        check_expires(expires_at)
    if validate:
        check_credential(key[0], value, key[1])
    asked = Write(key, value, metadata, expires_at, must_exist, keep, merge, by)
    result = await s.write_queue.submit(asked, functools.partial(_commit, s))
    s.touch()
    return result


async def _commit(s: LockState, group: list[Write]) -> list[dict[str, Any] | errors.AgentError]:
    """``group`` in one transaction, under the write lock: each write planned against the
    entries and the group's earlier writes (a write that cannot be made gets its error
    and leaves the others be), the rows put together, then the entries changed."""
    results: list[dict[str, Any] | errors.AgentError] = []
    planned: list[tuple[Key, Row, HistoryRow | None, Entry]] = []
    async with s.writing() as storage:
        ahead: dict[Key, Entry] = {}  # the group's own writes, as a later one of it sees them
        for w in group:
            old = ahead[w.key] if w.key in ahead else s.entries.get(w.key)
            try:
                row, replaced, entry = _planned(storage, w, old)
            except errors.AgentError as e:
                results.append(e)
                continue
            ahead[w.key] = entry
            planned.append((w.key, row, replaced, entry))
            results.append({"created": old is None})
        if planned:
            await s.db(s.store.put_many, [(row, replaced) for _, row, replaced, _ in planned])
        # not locked meanwhile: the entries hold their plaintext
        holds = s.holds(storage)
        for key, _, _, entry in planned:
            s.entries[key] = entry if holds else entry.sealed()
    return results


def _planned(storage: crypto.SecureStorage, w: Write, old: Entry | None) -> tuple[Row, HistoryRow | None, Entry]:
    """The row ``w`` writes, the history row of the value it replaces (None when nothing
    changes: a resent store, an import run twice), and the entry it leaves."""
    key = w.key
    if w.must_exist and old is None:
        raise missing(key, " to update")
    kept, expires_at = kept_fields(
        f"{key[0]}/{key[1]}",
        None if old is None else (old.metadata, old.expires),
        w.metadata,
        w.expires_at,
        keep=w.keep or w.must_exist,
        merge=w.merge,
    )
    if w.merge or w.keep:
        check_metadata(kept)  # the old and the given together must still fit
    now = time.time()
    row = Row(
        key[0],
        key[1],
        seal(storage, key[0], key[1], "value", w.value),
        seal(storage, key[0], key[1], "metadata", kept),
        old.created if old else now,
        now,
        expires_at,
    )
    unchanged = old is not None and (old.value, old.metadata, old.expires) == (w.value, kept, expires_at)
    replaced = None if unchanged else previous(storage, key, old, "replaced", w.by)
    return row, replaced, Entry(row.created, row.updated, row.expires, w.value, kept)


async def delete(s: LockState, key: Key, by: Who = NOBODY) -> None:
    check_key(*key)
    async with s.writing() as storage:
        if not await s.db(s.store.delete, *key, previous(storage, key, s.entries.get(key), "deleted", by)):
            raise missing(key, among=s.entries)
        s.entries.pop(key, None)
    s.touch()


async def rename(s: LockState, old: Key, new: Key, *, replace: bool = False, by: Who = NOBODY) -> dict[str, Any]:
    """Move ``old`` to ``new`` with its value, metadata, times, expiry and previous values;
    ``AlreadyExists`` if ``new`` is taken, unless ``replace`` (the replaced value goes
    into ``new``'s history)."""
    old, new = check_key(*old), check_key(*new)
    if old == new:
        raise errors.BadRequest(f"{old[0]}/{old[1]} is already its name")
    async with s.writing() as storage:
        entry = s.entries.get(old)
        if entry is None:
            raise missing(old)
        if entry.corrupt or entry.value is None or entry.metadata is None:
            raise errors.IntegrityError(f"{old[0]}/{old[1]} fails its integrity check, so it cannot be moved")
        replaced = new in s.entries
        if replaced and not replace:
            raise errors.AlreadyExists(f"{new[0]}/{new[1]} exists already; ask to replace it (agent mv --force)")
        row = Row(
            new[0],
            new[1],
            seal(storage, *new, "value", entry.value),
            seal(storage, *new, "metadata", entry.metadata),
            entry.created,
            entry.updated,
            entry.expires,
        )
        kept = previous(storage, new, s.entries.get(new), "replaced", by)
        # its previous values go with it, sealed again under the new name (the same rules read them)
        moved = [
            dataclasses.replace(h, platform=new[0], credential_type=new[1], sealed=sealed)
            for h in await s.db(s.store.history, old, 2**62)
            if (sealed := _resealed(storage, old, new, h)) is not None
        ]
        await s.db(functools.partial(s.store.rename, replace=True, old=kept, history=moved), [(old, row)])
        s.entries.pop(old, None)
        # not locked meanwhile: the entry keeps its plaintext
        s.entries[new] = entry if s.holds(storage) else entry.sealed()
    s.touch()
    return {"replaced": replaced}
