"""What a write keeps of the credential it replaces: its metadata and its expiry.

Rules of this module: pure functions of the old entry's fields and the request, no
I/O; nothing of a replaced credential is dropped unless the request says so (a
given field, ``keep`` false on ``store``), and metadata that failed its integrity
check is never silently replaced by ``{}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from client import errors

__all__ = ["KEEP", "Keep", "kept_fields"]


class Keep:
    """The type of ``KEEP``: an argument not given, as opposed to None (clear it)."""

    def __repr__(self) -> str:
        return "KEEP"


KEEP: Final = Keep()


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
