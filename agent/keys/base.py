"""The protocols of ``agent.keys``: what a key source is, and what it may keep in the vault."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

__all__ = ["KeySource", "Meta"]


class Meta(Protocol):
    """The vault's meta as a key source sees it (read from memory, saved in the vault)."""

    def get(self, name: str) -> bytes | None: ...

    def vault_id(self) -> str: ...

    async def save(self, items: Mapping[str, bytes]) -> None: ...

    async def drop(self, name: str) -> None: ...


class KeySource(Protocol):
    name: str
    # True: opening needs the user's passphrase, so the agent never unlocks itself
    # and opens one attempt at a time; False: the agent unlocks itself on first need
    needs_passphrase: bool

    def __init__(self, meta: Meta, deadline: float) -> None: ...

    async def create(self, key: bytes, vault_id: str, passphrase: str | None) -> tuple[dict[str, bytes], str | None]:
        """Give a new vault's master key its home; return the meta to store with the
        vault and the name of the backend that holds it (or None)."""
        ...

    async def open(self, passphrase: str | None) -> bytes:
        """The master key (the caller checks that it opens the vault)."""
        ...

    async def rewrap(self, new_key: bytes, passphrase: str | None) -> dict[str, bytes | None]:
        """Give ``new_key`` its home beside the current key; return the meta to commit
        in the one transaction that re-seals every row under it (None: drop that key)."""
        ...

    def forget(self) -> None:
        """At a lock: let go of anything that holds the key."""
        ...

    def preload(self) -> None:
        """Load, in the calling (background) thread, the code a later ``open`` needs, where that
        is slow; no keystore is asked anything."""
        ...

    def claim_early(self) -> bool:
        """Take the key a helper began to read as the agent started (``agent.keys.early``, for a
        first request that needs it); True: the agent unlocks at once, and ``open`` uses it."""
        ...

    async def tidy(self) -> None:
        """Remove what an earlier rotation left behind (best effort, retried later)."""
        ...

    async def retire(self) -> None:
        """The vault has switched to another source: remove the key's home here and
        this source's meta (raises, with the meta kept, when the home cannot be reached)."""
        ...
