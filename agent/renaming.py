"""``rename``: a credential moves to a new name with its value, metadata, times and expiry.

The row binding (``agent.crypto.seal``) puts the name into each token, so the value
and metadata are sealed again under the new name, and the old row is deleted and the
new one written in one store transaction: a crash leaves one name or the other.
Apart from ``agent.state`` (at its size limit), under the same write lock its
writes take.
"""

from __future__ import annotations

import functools
from typing import Any

from agent.crypto import seal
from agent.state import Agent, Key
from agent.stores import Row
from client import errors
from client.validation import check_name

__all__ = ["rename"]


def _checked(key: Key) -> Key:
    return check_name(key[0]), check_name(key[1], "credential type")


async def rename(a: Agent, old: Key, new: Key, *, replace: bool = False) -> dict[str, Any]:
    """Move ``old`` to ``new``; ``AlreadyExists`` if ``new`` is taken, unless ``replace``."""
    old, new = _checked(old), _checked(new)
    if old == new:
        raise errors.BadRequest(f"{old[0]}/{old[1]} is already its name")
    async with a._writing() as storage:
        entry = a.entries.get(old)
        if entry is None:
            raise errors.NotFound(f"no credential {old[0]}/{old[1]}")
        if entry.corrupt or entry.value is None or entry.metadata is None:
            raise errors.IntegrityError(f"{old[0]}/{old[1]} fails its integrity check, so it cannot be moved")
        replaced = new in a.entries
        if replaced and not replace:
            raise errors.AlreadyExists(f"{new[0]}/{new[1]} exists already; ask to replace it (agent mv --force)")
        row = Row(new[0], new[1], seal(storage, *new, "value", entry.value), seal(storage, *new, "metadata",
                  entry.metadata), entry.created, entry.updated, entry.expires)
        await a.db(functools.partial(a.store.rename, replace=True), [(old, row)])
        a.entries.pop(old, None)
        # not locked meanwhile: the entry keeps its plaintext
        a.entries[new] = entry if a._storage is storage else entry.sealed()
    a.touch()
    return {"replaced": replaced}
