"""One credential as the agent holds it (``Entry``), and the entries an unlock opens.

Rules of this module: an entry holds its plaintext only while the agent is unlocked
(``sealed()`` drops it); a row that fails its integrity check becomes a corrupt entry
that holds nothing of it, and both fields open or neither does.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from agent import crypto
from agent.crypto import unseal
from agent.stores import Row
from client import errors

__all__ = ["Entry", "Key", "open_entries"]

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


def open_entries(storage: crypto.SecureStorage, rows: list[Row]) -> dict[Key, Entry]:
    """Every row's entry with its plaintext; a row that fails its check is a corrupt entry."""
    entries = {}
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
