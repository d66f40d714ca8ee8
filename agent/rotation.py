"""Master key rotation: every row re-encrypted under a new key, crash-safe at each step.

The order, for a vault whose key lives in the OS keystore (a crash at any step
leaves a vault that opens, with the old key or the new one, and nothing lost):

1. one vault transaction records ``pending_key_account`` (a fresh keystore account);
2. the new key is stored in the keystore under that account and read back;
3. one vault transaction re-seals every row, the key check and the data key of
   ``encrypt``/``decrypt`` (so earlier tokens stay readable) under the new key,
   points ``key_account`` at the new entry, records the old one as
   ``stale_key_account`` and drops ``pending_key_account``;
4. the old keystore entry is deleted, then ``stale_key_account``.

A crash before 3 commits leaves the vault on the old key (the old entry is
untouched); the next unlock deletes the orphaned new entry named by
``pending_key_account``. A crash after 3 leaves it on the new key; the next unlock
deletes the old entry named by ``stale_key_account``. SQLite makes 3 all or
nothing. For a passphrase vault, the new key is wrapped under the (possibly new)
passphrase and written with the rows in step 3's single transaction.

``agent.state.Agent.rotate_key`` runs the steps under the unlock and write locks;
the key source (``agent.keys``) does steps 1, 2 and 4 (``rewrap``, ``tidy``); this
module does step 3 on the storage thread.
"""

from __future__ import annotations

import dataclasses
from collections.abc import MutableMapping

from agent import crypto, faults
from agent.crypto import seal, unseal
from agent.stores import Row, Store
from client import errors

__all__ = ["reseal_all", "SEALED_META", "seal_meta", "unseal_meta"]

# Vault meta named so holds a value sealed under the master key (a team vault's token):
# re-sealed with the rows, bound to its name. No credential row can take such a name.
SEALED_META = "sealed/"


def seal_meta(storage: crypto.SecureStorage, name: str, payload: str) -> bytes:
    return seal(storage, "", "meta", name, payload)


def unseal_meta(storage: crypto.SecureStorage, name: str, token: bytes) -> str:
    payload = unseal(storage, "", "meta", name, token)
    if not isinstance(payload, str):
        raise errors.IntegrityError(f"the sealed meta {name} is not text")
    return payload


def reseal_all(
    store: Store, old: crypto.SecureStorage, new: crypto.SecureStorage, meta: MutableMapping[str, bytes | None]
) -> int:
    """On the storage thread: re-seal every row under ``new`` and commit it with ``meta``
    (None: drop that key) in one transaction; return how many rows there were. The
    re-sealed data key, if the vault has one, and the sealed meta (``SEALED_META``)
    re-sealed under ``new`` are added to ``meta``, so that the caller's
    ``VaultMeta.committed(meta)`` takes them in."""
    stored = store.meta()
    sealed = stored.get(crypto.DATA_KEY)
    if sealed is not None:
        meta[crypto.DATA_KEY] = crypto.reseal_data_key(old, new, sealed)
    for name, token in stored.items():
        if name.startswith(SEALED_META) and name not in meta:
            meta[name] = seal_meta(new, name, unseal_meta(old, name, token))
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
        rows.append(dataclasses.replace(
            r,
            value=seal(new, r.platform, r.credential_type, "value", value),
            metadata=seal(new, r.platform, r.credential_type, "metadata", metadata),
        ))
    kept = {k: v for k, v in meta.items() if v is not None}
    dropped = tuple(k for k, v in meta.items() if v is None)
    store.replace_all(rows, kept, lambda: faults.point("rotate:in-transaction"), drop_meta=dropped)
    return len(rows)
