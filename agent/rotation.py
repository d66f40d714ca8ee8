"""Master key rotation: every row re-encrypted under a new key, crash-safe at each step.

The order, for a vault whose key lives in the OS keystore (a crash at any step
leaves a vault that opens, with the old key or the new one, and nothing lost):

1. one vault transaction records ``pending_key_account`` (a fresh keystore account);
2. the new key is stored in the keystore under that account and read back;
3. one vault transaction re-seals every row and the key check under the new key,
   points ``key_account`` at the new entry, records the old one as
   ``stale_key_account`` and drops ``pending_key_account``;
4. the old keystore entry is deleted, then ``stale_key_account``.

A crash before 3 commits leaves the vault on the old key (the old entry is
untouched); the next unlock deletes the orphaned new entry named by
``pending_key_account``. A crash after 3 leaves it on the new key; the next unlock
deletes the old entry named by ``stale_key_account``. SQLite makes 3 all or
nothing. For a passphrase vault, the new key is wrapped under the (possibly new)
passphrase and written with the rows in step 3's single transaction.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import secrets
from typing import Any

import msgpack

from agent import crypto, faults, keystore
from agent.core import Agent
from agent.vault import Row, Vault, seal, unseal
from client import errors

__all__ = ["rotate_key", "forget_stale_key"]

log = logging.getLogger("agent.rotation")

_LEFTOVERS = ("pending_key_account", "stale_key_account")


def _reseal_all(vault: Vault, old: crypto.SecureStorage, new: crypto.SecureStorage, meta: dict[str, bytes]) -> int:
    """On the storage thread: re-seal every row under ``new``, commit with ``meta``."""
    rows: list[Row] = []
    for r in vault.rows():
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
    vault.replace_all(rows, meta, lambda: faults.point("rotate:in-transaction"), drop_meta=("pending_key_account",))
    return len(rows)


async def _verify_passphrase(a: Agent, passphrase: str | None) -> None:
    # the agent is unlocked already, but replacing the key is the one step that
    # should need the passphrase again (as changing a password does)
    if passphrase is None:
        raise errors.BadPassphrase("rotating the key of a passphrase vault needs its current passphrase")
    old_key = await a._unwrap(passphrase)
    a._check_key(crypto.SecureStorage(old_key))


async def rotate_key(a: Agent, passphrase: str | None = None, new_passphrase: str | None = None) -> dict[str, Any]:
    if not a.initialized:
        raise errors.NotInitialized()
    if new_passphrase is not None and not new_passphrase:
        raise errors.BadRequest("the new passphrase is empty")
    old = await a.storage()
    write_lock, unlock_lock = a._locks()
    async with unlock_lock, write_lock:
        if a._storage is not old:
            raise errors.Locked("the agent was locked during the rotation; nothing was changed")
        new_key = crypto.generate_key()
        new = crypto.SecureStorage(new_key)
        meta: dict[str, bytes] = {"key_check": seal(new, "", "", "key-check", a.meta["vault_id"].decode())}
        deadline = a.options.keystore_deadline
        if a.key_source == "keyring":
            old_account = a._account()
            new_account = f"master-key-{a.meta['vault_id'].decode()}-{secrets.token_hex(4)}"
            # step 1: name the new entry in the vault before it exists, so a crash cannot orphan it
            await a.db(a.vault.set_meta_many, {"pending_key_account": new_account.encode()})
            a.meta["pending_key_account"] = new_account.encode()
            try:
                await keystore.set_key(new_account, new_key, deadline)  # step 2
                if await keystore.get_key(new_account, deadline) != new_key:
                    raise errors.KeystoreUnavailable("the OS keystore did not return the key just stored in it")
            except errors.AgentError:
                await forget_stale_key(a)  # best effort now; the next unlock retries
                raise
            faults.point("rotate:after-keystore")
            meta["key_account"] = new_account.encode()
            meta["stale_key_account"] = old_account.encode()
        else:
            await _verify_passphrase(a, passphrase)
            secret = new_passphrase or passphrase
            assert secret is not None
            params, wrapped = await asyncio.to_thread(crypto.wrap_key, new_key, secret)
            meta["kdf"] = msgpack.packb([params.salt, params.n, params.r, params.p])
            meta["wrapped_key"] = wrapped
        count = await a.db(_reseal_all, a.vault, old, new, meta)  # step 3: one transaction
        a.meta.update(meta)
        a.meta.pop("pending_key_account", None)
        if a._storage is old:  # a `lock` meanwhile holds: the next unlock opens with the new key
            a._storage = new
        faults.point("rotate:after-vault")
    log.info("rotated the master key (%d credentials re-encrypted)", count)
    await forget_stale_key(a)  # step 4
    return {"credentials": count, "key_source": a.key_source}


async def forget_stale_key(a: Agent) -> None:
    """Delete keystore entries a rotation left behind (an interrupted one, or the old key)."""
    for name in _LEFTOVERS:
        account = a.meta.get(name)
        if account is None:
            continue
        if account.decode() != a._account():  # never the live key, whatever the meta says
            try:
                await keystore.delete_key(account.decode(), a.options.keystore_deadline)
            except errors.KeystoreUnavailable as e:
                log.warning("could not delete an old keystore entry (%s); will retry at the next unlock", e.message)
                continue
        await a.db(a.vault.delete_meta, name)
        a.meta.pop(name, None)
