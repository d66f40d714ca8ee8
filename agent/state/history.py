"""Previous values of a credential: what an overwrite or a deletion keeps, and getting it back.

Rules of this module:
- a previous value is kept in the transaction that replaces or deletes it (the store's
  ``put``/``delete``/``rename`` take it, ``credentials.previous`` makes it): there is no
  moment when neither the old nor the new value is stored;
- it is sealed as one token bound to its name and to the field ``history``: it never opens
  as a current value, and a rotation of the master key re-seals it (``resealing``);
- versions are numbered as the user sees them, newest first: 1 is the value the credential
  had last before the current one (or before it was deleted);
- listing shows names, times and the replacing program, never values; a value is read
  only by asking for one version of one name, which is audited as a read.
"""

from __future__ import annotations

from typing import Any, Final

from agent.crypto import unseal
from agent.state import credentials
from agent.state.entry import Key
from agent.state.lockstate import LockState
from agent.stores import Who
from client import errors
from client.validation import check_key

__all__ = ["MAX_LISTED", "listing", "value", "restore"]

# rows one listing returns at most (the newest): a reply stays within one frame
MAX_LISTED: Final = 500
# a version asked for: far above any history_keep, and within what SQLite's LIMIT takes
MAX_VERSION: Final = 2**31 - 1


async def listing(s: LockState, key: Key | None, limit: int | None = None) -> list[dict[str, Any]]:
    """The previous values of ``key`` (every name's when None), newest first, without
    values; at most ``limit`` rows (``MAX_LISTED`` when not given)."""
    if key is not None:
        key = check_key(*key)
    limit = MAX_LISTED if limit is None else limit
    if not 1 <= limit <= MAX_LISTED:
        raise errors.BadRequest(f"limit must be between 1 and {MAX_LISTED}")
    rows = await s.db(s.store.history, key, limit)
    listed = [
        {
            "platform": r.platform,
            "credential_type": r.credential_type,
            "version": r.version,
            "set_at": r.set_at,
            "replaced": r.replaced,
            "reason": r.reason,
            "by": r.by,  # the executable, as the kernel names it
            "caller": r.caller,  # the script or module it said it runs
        }
        for r in rows
    ]
    return listed


async def value(s: LockState, key: Key, version: int) -> dict[str, Any]:
    """Version ``version`` of ``key``: its value, metadata, expiry and times."""
    key = check_key(*key)
    if not 1 <= version <= MAX_VERSION:
        raise errors.BadRequest(f"version must be between 1 (the newest previous value) and {MAX_VERSION}")
    storage = await s.storage()
    rows = await s.db(s.store.history, key, version)
    if len(rows) < version:
        kept = f"{len(rows)} previous value{'s' if len(rows) != 1 else ''}"
        raise errors.NotFound(f"{key[0]}/{key[1]} has no version {version} in its history ({kept} kept)")
    row = rows[version - 1]
    value, metadata, expires, created = unseal(storage, *key, "history", row.sealed)
    s.touch()
    return {
        "value": value,
        "metadata": metadata,
        "expires_at": expires,
        "created": created,
        "set_at": row.set_at,
        "replaced": row.replaced,
    }


async def restore(s: LockState, key: Key, version: int, by: Who) -> dict[str, Any]:
    """Make version ``version`` of ``key`` its current value again, with its metadata and
    expiry; the value it replaces goes into the history, so a restore can be undone too."""
    old = await value(s, key, version)
    result = await credentials.write(
        s,
        key,
        old["value"],
        metadata=old["metadata"],
        expires_at=old["expires_at"],
        validate=False,  # it was stored once; a rule that changed since must not keep it out
        by=by,
    )
    return {**result, "set_at": old["set_at"]}
