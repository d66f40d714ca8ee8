"""One credential as the agent holds it (``Entry``), the held entries by name (``Entries``),
and the entries an unlock opens.

Rules of this module: an entry holds its plaintext only while the agent is unlocked
(``sealed()`` drops it); a row that fails its integrity check becomes a corrupt entry
that holds nothing of it, and both fields open or neither does. ``Entries`` is a dict
(its ``get`` is the hot path, C's own) that keeps its names in order for listings once
a listing asked for them: each change inserts or removes one name, nothing re-sorts.
"""

from __future__ import annotations

import bisect
import dataclasses
import logging
from collections.abc import Iterable
from typing import Any

from agent import crypto
from agent.crypto import unseal
from agent.stores import Row
from client import errors

__all__ = ["Entry", "Entries", "Key", "open_entries"]

log = logging.getLogger("agent.state")

Key = tuple[str, str]


@dataclasses.dataclass(frozen=True, slots=True, repr=False)
class Entry:
    """One credential as the agent holds it: its times always, its plaintext only while unlocked."""

    created: float
    updated: float
    expires: float | None
    value: str | None = None
    metadata: dict[str, Any] | None = None
    corrupt: bool = False  # failed its integrity check: nothing of it is held

    def __repr__(self) -> str:
        held = "corrupt" if self.corrupt else "sealed" if self.value is None else "<value held>"
        return f"Entry(created={self.created!r}, updated={self.updated!r}, expires={self.expires!r}, {held})"

    def sealed(self) -> Entry:
        return Entry(self.created, self.updated, self.expires)


class Entries(dict[Key, Entry]):
    """The held entries by name, and (once ``ordered`` was asked) their names in order.

    The order is kept through ``[key] = entry``, ``del`` and ``pop``, one name at a
    time (a bisection and a move of pointers); any other change forgets it, and the
    next ``ordered`` sorts again. ``sorts`` counts those sorts (``agent status``)."""

    __slots__ = ("_order", "sorts")

    def __init__(self, entries: Iterable[tuple[Key, Entry]] = (), sorts: int = 0) -> None:
        super().__init__(entries)
        self._order: list[Key] | None = None
        self.sorts = sorts

    def ordered(self) -> list[Key]:
        """Every name, sorted (the list itself: read it, never change it)."""
        if self._order is None:
            self._order = sorted(self)
            self.sorts += 1
        return self._order

    def __setitem__(self, key: Key, entry: Entry) -> None:
        order = self._order
        if order is not None and key not in self:
            bisect.insort(order, key)
        super().__setitem__(key, entry)

    def __delitem__(self, key: Key) -> None:
        super().__delitem__(key)
        self._forget(key)

    def pop(self, key: Key, *default: Any) -> Any:
        had = key in self
        entry = super().pop(key, *default)
        if had:
            self._forget(key)
        return entry

    def _forget(self, key: Key) -> None:
        order = self._order
        if order is not None:
            i = bisect.bisect_left(order, key)
            if i < len(order) and order[i] == key:
                del order[i]
            else:
                self._order = None

    # the other changes of a dict forget the order
    def clear(self) -> None:
        super().clear()
        self._order = None

    def popitem(self) -> tuple[Key, Entry]:
        self._order = None
        return super().popitem()

    def setdefault(self, key: Key, default: Entry) -> Entry:
        self._order = None
        return super().setdefault(key, default)

    def update(self, *args: Any, **kwargs: Any) -> None:
        self._order = None
        super().update(*args, **kwargs)

    def __ior__(self, other: Any) -> Entries:  # type: ignore[override,misc]
        self._order = None
        super().__ior__(other)
        return self


def open_entries(storage: crypto.SecureStorage, rows: list[Row], sorts: int = 0) -> Entries:
    """Every row's entry with its plaintext; a row that fails its check is a corrupt entry.
    (``sorts``: the count of the entries these replace, carried on.)"""
    entries = Entries(sorts=sorts)
    for r in rows:
        key = (r.platform, r.credential_type)
        try:  # both fields or neither: a corrupt entry holds nothing
            value = unseal(storage, r.platform, r.credential_type, "value", r.value)
            metadata = unseal(storage, r.platform, r.credential_type, "metadata", r.metadata)
            entries[key] = Entry(r.created, r.updated, r.expires, value, metadata)
        except errors.IntegrityError:
            log.error("credential %s/%s failed its integrity check", r.platform, r.credential_type)
            entries[key] = Entry(r.created, r.updated, r.expires, corrupt=True)
    return entries
