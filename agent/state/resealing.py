"""Every row sealed again, on the storage thread: under a new master key (a rotation's
step 3, ``reseal_all``), or under its canonical name (``migrate``, at unlock).

Rows stored under names that are not canonical (``HF``, ``hugging-face``, a keyring
name from before case was escaped) are renamed when the agent opens the vault.

Rules of this module:
- it runs on the storage thread, with the vault's key: a row's name is bound into its
  ciphertext (``agent.crypto``), so a renamed row is re-sealed;
- a rotation re-seals every row, every previous value (the history), the data key and
  every sealed meta entry (``crypto.SEALED_META``) in the one transaction that also commits the new key's
  meta; a row that fails its integrity check stops it before anything is written;
- every rename of a vault is one store transaction: a crash before it commits
  leaves every row under its old name, and the next unlock tries again;
- nothing is lost: where several rows would get the same name, the newest
  (``updated``) gets it and each other one the first free ``<name>-2``, ``<name>-3``,
  ..., with ``renamed_from`` (its old platform) added to its metadata and a log line;
- a row that fails its integrity check cannot be re-sealed: it keeps its name
  (and a row's new name never takes that name from it);
- a vault that cannot be written (read-only) is served as it is, with a warning.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, MutableMapping

from agent import crypto, faults
from agent.crypto import seal, unseal
from agent.stores import HistoryRow, Row, Store
from client import errors, keyring_names
from client.names import canonical_platform, canonical_type
from client.protocol import MAX_NAME

__all__ = ["canonical_name", "migrate", "reseal_all"]

log = logging.getLogger("agent.canonical")

Key = tuple[str, str]


def canonical_name(platform: str) -> str:
    """The name a stored platform should have now."""
    return keyring_names.legacy_platform(platform) or canonical_platform(platform)


def _free(platform: str, ctype: str, taken: set[Key]) -> Key:
    n = 2
    while True:
        suffix = f"-{n}"
        key = (platform[: MAX_NAME - len(suffix)] + suffix, ctype)
        if key not in taken:
            return key
        n += 1


def _readable(storage: crypto.SecureStorage, r: Row) -> tuple[str, object] | None:
    try:
        return (
            unseal(storage, r.platform, r.credential_type, "value", r.value),
            unseal(storage, r.platform, r.credential_type, "metadata", r.metadata),
        )
    except errors.IntegrityError:
        return None


def _plan(storage: crypto.SecureStorage, rows: Iterable[Row]) -> list[tuple[Key, Row]]:
    by_target: dict[Key, list[Row]] = {}
    for r in rows:
        by_target.setdefault((canonical_name(r.platform), canonical_type(r.credential_type)), []).append(r)
    groups: dict[Key, list[tuple[Row, tuple[str, object]]]] = {}
    taken: set[Key] = set()  # names that stay: canonical and alone, or unreadable
    for target, members in by_target.items():
        if len(members) == 1 and (members[0].platform, members[0].credential_type) == target:
            taken.add(target)
            continue
        for r in members:
            opened = _readable(storage, r)
            if opened is None:
                taken.add((r.platform, r.credential_type))
            else:
                groups.setdefault(target, []).append((r, opened))
    fixed = set(taken)
    taken |= groups.keys()  # each canonical name goes to the newest row of its group
    moves = []
    for target, group in sorted(groups.items()):
        group.sort(key=lambda m: (-m[0].updated, m[0].platform))
        for i, (r, (value, metadata)) in enumerate(group):
            old = (r.platform, r.credential_type)
            key = target
            if i > 0 or target in fixed:
                key = _free(*target, taken)
                taken.add(key)
                if isinstance(metadata, dict):
                    metadata = {**metadata, "renamed_from": r.platform}
                log.warning("%s/%s is renamed %s/%s: another credential is stored as %s/%s", *old, *key, *target)
            elif key == old:
                continue
            else:
                log.info("%s/%s is renamed %s/%s", *old, *key)
            moves.append(
                (
                    old,
                    Row(
                        key[0],
                        key[1],
                        seal(storage, *key, "value", value),
                        seal(storage, *key, "metadata", metadata),
                        r.created,
                        r.updated,
                        r.expires,
                    ),
                )
            )
    return moves


def migrate(store: Store, storage: crypto.SecureStorage, rows: list[Row]) -> list[Row]:
    """On the storage thread: rename what is not canonical in one transaction; the rows after it."""
    moves = _plan(storage, rows)
    if not moves:
        return rows
    if store.read_only is not None:
        log.warning(
            "%d credentials have names that are not canonical, but the vault is read-only (%s); "
            "they keep their names until it can be written",
            len(moves),
            store.read_only,
        )
        return rows
    try:
        store.rename(moves, lambda: faults.point("names:in-transaction"))
    except errors.StorageError as e:
        log.warning(
            "renaming %d credentials to their canonical names failed, they keep their names: %s", len(moves), e.message
        )
        return rows
    log.info("renamed %d credentials to their canonical names", len(moves))
    return store.rows()


def reseal_all(
    store: Store, old: crypto.SecureStorage, new: crypto.SecureStorage, meta: MutableMapping[str, bytes | None]
) -> int:
    """On the storage thread: re-seal every row under ``new`` and commit it with ``meta``
    (None: drop that key) in one transaction; return how many rows there were. The
    re-sealed data key, if the vault has one, and the sealed meta (``crypto.SEALED_META``)
    re-sealed under ``new`` are added to ``meta``, so that the caller's
    ``VaultMeta.committed(meta)`` takes them in."""
    stored = store.meta()
    sealed = stored.get(crypto.DATA_KEY)
    if sealed is not None:
        meta[crypto.DATA_KEY] = crypto.reseal_data_key(old, new, sealed)
    for name, token in stored.items():
        if name.startswith(crypto.SEALED_META) and name not in meta:
            meta[name] = crypto.seal_meta(new, name, crypto.unseal_meta(old, name, token))
    rows: list[Row] = []
    for r in store.rows():
        try:
            value = unseal(old, r.platform, r.credential_type, "value", r.value)
            metadata = unseal(old, r.platform, r.credential_type, "metadata", r.metadata)
        except errors.IntegrityError:
            raise errors.IntegrityError(
                f"{r.platform}/{r.credential_type} fails its integrity check, so it cannot be re-encrypted; "
                "delete it (or restore the vault) before rotating the key"
            ) from None
        rows.append(
            dataclasses.replace(
                r,
                value=seal(new, r.platform, r.credential_type, "value", value),
                metadata=seal(new, r.platform, r.credential_type, "metadata", metadata),
            )
        )
    kept = {k: v for k, v in meta.items() if v is not None}
    dropped = tuple(k for k, v in meta.items() if v is None)
    history = _resealed_history(store, old, new)
    store.replace_all(rows, kept, lambda: faults.point("rotate:in-transaction"), drop_meta=dropped, history=history)
    return len(rows)


def _resealed_history(store: Store, old: crypto.SecureStorage, new: crypto.SecureStorage) -> list[HistoryRow]:
    """Every previous value sealed under ``new``. One that fails its integrity check was
    unreadable already: it stays as it is (never readable again) and is said in the log,
    rather than stopping the rotation of every current credential."""
    resealed = []
    for h in store.history(None, limit=2**62):
        try:
            payload = unseal(old, h.platform, h.credential_type, "history", h.sealed)
        except errors.IntegrityError:
            log.warning(
                "a previous value of %s/%s fails its integrity check; it is not re-encrypted",
                h.platform,
                h.credential_type,
            )
            continue
        resealed.append(dataclasses.replace(h, sealed=seal(new, h.platform, h.credential_type, "history", payload)))
    return resealed
