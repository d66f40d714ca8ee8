"""The master key's life: ``init``, ``rotate_key``, ``rekey`` (to another key source), a
recovery code, and ``recover`` with it.

Every step that replaces or moves the key runs under ``LockState.exclusive()`` (the
unlock lock, then the write lock), so no unlock and no write runs meanwhile. The
orders below are such that a crash at any point leaves a vault that opens and loses
nothing.

Rotation (a new key; every row re-sealed), for a vault whose key lives in the OS keystore:

1. one vault transaction records ``pending_key_account`` (a fresh keystore account);
2. the new key is stored in the keystore under that account and read back;
3. one vault transaction re-seals every row, the key check, the data key of
   ``encrypt``/``decrypt`` (so earlier tokens stay readable) and the sealed meta under
   the new key, points ``key_account`` at the new entry, records the old one as
   ``stale_key_account`` and drops ``pending_key_account``;
4. the old keystore entry is deleted, then ``stale_key_account``.

A crash before 3 commits leaves the vault on the old key (the old entry is
untouched); the next unlock deletes the orphaned new entry named by
``pending_key_account``. A crash after 3 leaves it on the new key; the next unlock
deletes the old entry named by ``stale_key_account``. SQLite makes 3 all or nothing.
For a passphrase vault, the new key is wrapped under the (possibly new) passphrase
and written with the rows in step 3's single transaction. The key source does steps
1, 2 and 4 (``rewrap``, ``tidy``); ``resealing.reseal_all`` does step 3.

A switch of key source (the same key; no credential re-encrypted):

1. the target source gives the key its new home (a keystore entry written and read
   back, or the key wrapped under the new passphrase) - nothing points at it yet;
2. one vault transaction records the new home, ``key_source`` and, when the source
   changes, ``retired_source``: from here on the vault opens the new way;
3. the old source removes its home (its keystore entry, or its wrapped key) and its
   meta, then ``retired_source`` goes. A crash before that leaves an old home that
   still opens the vault; the next ``unlock`` (or ``rekey``) removes it (``finish``).

A recovery code is the master key wrapped under a one-time random code (160 bits,
base32 in groups of four), shown once, kept nowhere but where the user puts it.
It survives ``rekey`` and ``recover`` (the key is the same); a key rotation makes it
useless and drops it.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import secrets
from typing import Any, Final

from agent import crypto, faults, keys
from agent.crypto import seal
from agent.keys import passphrase
from agent.state import presence, resealing
from agent.state.lockstate import MAX_WAITING_UNLOCKS, LockState
from client import errors, protocol

__all__ = [
    "init",
    "rotate_key",
    "rekey",
    "recover",
    "make_recovery_code",
    "drop_recovery_code",
    "finish",
    "unfinished",
    "has_recovery_code",
]

log = logging.getLogger("agent.keyswitch")
state_log = logging.getLogger("agent.state")

RETIRED: Final = "retired_source"
RECOVERY: Final = ("recovery_kdf", "recovery_wrapped_key")
CODE_BYTES: Final = 20  # 160 bits: 32 base32 characters, eight groups of four
# the code carries 160 bits of its own: a light scrypt suffices (no one guesses 2**160)
RECOVERY_KDF: Final = (2**14, 8, 1)


# --- a new vault and a new key -----------------------------------------------------------
async def init(
    s: LockState, key_source: str | None, passphrase: str | None, recovery_code: bool = False
) -> dict[str, Any]:
    """A new vault; with ``recovery_code``, its first recovery code too (in the reply, its only
    copy): made here, where the user who creates the vault is there, it needs no other proof."""
    keys.check_choice(key_source, passphrase)
    epoch = s.epoch
    deadline = s.options.keystore_deadline
    async with s.exclusive():
        if s.initialized:
            raise errors.AlreadyExists(f"a vault already exists at {s.options.vault}; it was left untouched")
        name = key_source or await keys.default_choice(passphrase, deadline)
        source = keys.source_for(name, s.meta, deadline)
        key = crypto.generate_key()
        vault_id = os.urandom(8).hex()
        storage = crypto.SecureStorage(key)
        meta = {
            "schema": b"1",
            "vault_id": vault_id.encode(),
            "key_source": name.encode(),
            "key_check": seal(storage, "", "", "key-check", vault_id),
        }
        created, backend = await source.create(key, vault_id, passphrase)
        await s.meta.save({**meta, **created})
        s.set_source(source)
        rows = await s.db(s.store.rows)
        if s.epoch != epoch:
            state_log.info("initialised a vault (key source %s), left locked by a lock request", name)
            raise errors.Locked(
                "the vault was created, but the agent was locked by request meanwhile; run `agent unlock`"
            )
        s.adopt(storage, rows)
    state_log.info("initialised a vault (key source %s)", name)
    result = {"key_source": name, "backend": backend, "vault": str(s.options.vault)}
    if recovery_code:
        result["recovery_code"] = await _new_code(s, key)
    return result


async def rotate_key(s: LockState, passphrase: str | None = None, new_passphrase: str | None = None) -> dict[str, Any]:
    """Re-seal every row under a new master key, in the order of this module's header."""
    source = s.source()
    if new_passphrase is not None and not new_passphrase:
        raise errors.BadRequest("the new passphrase is empty")
    old = await s.storage()
    async with s.exclusive():
        if not s.holds(old):
            raise errors.Locked("the agent was locked during the rotation; nothing was changed")
        new_key = crypto.generate_key()
        new = crypto.SecureStorage(new_key)
        meta: dict[str, bytes | None] = {"key_check": seal(new, "", "", "key-check", s.meta.vault_id())}
        if source.needs_passphrase:
            # the agent is unlocked already, but replacing the key is the one step that
            # should need the passphrase again (as changing a password does)
            if passphrase is None:
                raise errors.BadPassphrase(f"rotating the key of a {source.name} vault needs its current passphrase")
            s.check_key(crypto.SecureStorage(await source.open(passphrase)))
        meta.update(await source.rewrap(new_key, new_passphrase or passphrase))
        count = await s.db(resealing.reseal_all, s.store, old, new, meta)  # one transaction
        s.meta.committed(meta)
        s.switch_key(old, new)
        faults.point("rotate:after-vault")
    state_log.info("rotated the master key (%d credentials re-encrypted)", count)
    await source.tidy()
    return {"credentials": count, "key_source": s.key_source}


# --- another home for the same key ---------------------------------------------------------
def _normal(code: str) -> str:
    """A typed code as it was made: case, spaces and dashes do not matter."""
    return "".join(code.split()).replace("-", "").upper()


def _check_target(name: str, new_passphrase: str | None) -> None:
    if name not in protocol.KEY_SOURCES:
        raise errors.BadRequest("key_source must be " + " or ".join(repr(s) for s in protocol.KEY_SOURCES))
    if keys.implementations()[name].needs_passphrase and not new_passphrase:
        raise errors.BadRequest(f"a {name} key source needs a non-empty new passphrase")


async def _current_key(s: LockState, passphrase: str | None) -> bytes:
    """The unlocked vault's key, once the user has shown they are there: a passphrase vault
    wants its passphrase again (as changing a password does), through the source, so a wrong
    one costs its delay; a keystore vault, which has no secret the user types, its approval
    PIN (``presence``), or any process of the user could move the key to a passphrase of its
    choosing, or take a recovery code, and delete the keystore entry."""
    storage = await s.storage()
    source = s.source()
    if source.needs_passphrase:
        if passphrase is None:
            raise errors.BadPassphrase(f"this needs the current passphrase of the {source.name} vault")
        if await source.open(passphrase) != storage.master_key():
            raise errors.IntegrityError("the passphrase opens a key that is not this vault's")
    else:
        await presence.prove(s, passphrase)
    return storage.master_key()


async def _switch(s: LockState, key: bytes, name: str, new_passphrase: str | None) -> dict[str, Any]:
    """Steps 1-3 of a switch of key source; returns what the caller reports."""
    old = s.source()
    target = keys.source_for(name, s.meta, s.options.keystore_deadline)
    changes: dict[str, bytes | None] = dict(await target.rewrap(key, new_passphrase))  # 1
    changes["key_source"] = name.encode()
    if old.name != name:
        changes[RETIRED] = old.name.encode()
    kept = {k: v for k, v in changes.items() if v is not None}
    await s.db(s.store.replace_all, [], kept, None, tuple(k for k, v in changes.items() if v is None))  # 2
    s.meta.committed(changes)
    s.set_source(target)
    await target.tidy()  # its own leftovers: within the keystore, the old entry
    return {"key_source": name, "old_removed": await finish(s, old)}  # 3 (nothing to do within a source)


async def finish(s: LockState, old: keys.KeySource | None = None) -> bool:
    """Step 3: the retired source removes its home; False (logged) if it could not yet."""
    retired = s.meta.get(RETIRED)
    if retired is None:
        return True
    if old is None:
        old = keys.source_for(retired.decode(), s.meta, s.options.keystore_deadline)
    try:
        await old.retire()
    except errors.AgentError as e:
        log.warning(
            "the old %s home of the master key is not removed yet (%s); will retry at the next unlock",
            old.name,
            e.message,
        )
        return False
    await s.meta.drop(RETIRED)
    log.info("removed the master key's old home (%s)", old.name)
    return True


def unfinished(s: LockState) -> bool:
    return s.meta.get(RETIRED) is not None


def has_recovery_code(s: LockState) -> bool:
    return s.meta.get(RECOVERY[1]) is not None


async def rekey(s: LockState, name: str, passphrase: str | None, new_passphrase: str | None) -> dict[str, Any]:
    _check_target(name, new_passphrase)
    await finish(s)
    key = await _current_key(s, passphrase)
    if s.source().name == name:
        raise errors.BadRequest(
            f"the master key is in the {name} source already (a new passphrase: `agent rotate-key --new-passphrase`)"
        )
    async with s.exclusive():
        result = await _switch(s, key, name, new_passphrase)
    log.info("moved the master key to the %s source", name)
    return result


# --- the recovery code -------------------------------------------------------------------------
async def make_recovery_code(s: LockState, passphrase: str | None) -> dict[str, Any]:
    """A new recovery code (replacing an earlier one); the reply is its only copy."""
    return {"code": await _new_code(s, await _current_key(s, passphrase))}


async def _new_code(s: LockState, key: bytes) -> str:
    raw = base64.b32encode(secrets.token_bytes(CODE_BYTES)).decode()
    params, wrapped = await asyncio.to_thread(crypto.wrap_key, key, raw, RECOVERY_KDF)
    await s.meta.save({RECOVERY[0]: crypto.pack_kdf(params), RECOVERY[1]: wrapped})
    log.info("made a new recovery code")
    return "-".join(raw[i : i + 4] for i in range(0, len(raw), 4))


async def drop_recovery_code(s: LockState) -> bool:
    """After a key rotation: the code unwraps the old key, so it goes (True if there was one)."""
    if s.meta.get(RECOVERY[1]) is None:
        return False
    for name in RECOVERY:
        await s.meta.drop(name)
    log.info("dropped the recovery code: it opened the master key before the rotation")
    return True


async def _guess(s: LockState, code: str, wrapped: bytes, params: crypto.KdfParams) -> bytes:
    """The key the code unwraps. As with passphrases: one attempt at a time, a growing delay
    after each wrong code, and a bounded queue, so a flood of guesses slows itself, not the
    agent (the code's 160 bits need no more, but a guess should cost the guesser)."""
    if s.recovers_waiting >= MAX_WAITING_UNLOCKS:
        raise errors.Busy(f"{MAX_WAITING_UNLOCKS} recovery attempts are already waiting; try again later")
    s.recovers_waiting += 1
    try:
        async with s.recover_turn:
            await asyncio.sleep(passphrase.delay_after(s.recover_failures))
            try:
                key = await asyncio.to_thread(crypto.unwrap_key, wrapped, _normal(code), params)
            except errors.BadPassphrase:
                s.recover_failures += 1
                raise errors.BadPassphrase("that is not this vault's recovery code") from None
    finally:
        s.recovers_waiting -= 1
    s.recover_failures = 0
    return key


async def recover(s: LockState, code: str, name: str, new_passphrase: str | None) -> dict[str, Any]:
    """Open the vault with its recovery code, give the key a new home, and unlock."""
    _check_target(name, new_passphrase)
    raw_kdf, wrapped = s.meta.get(RECOVERY[0]), s.meta.get(RECOVERY[1])
    if raw_kdf is None or wrapped is None:
        raise errors.NotFound("this vault has no recovery code")
    key = await _guess(s, code, wrapped, crypto.unpack_kdf(raw_kdf))
    try:
        s.check_key(crypto.SecureStorage(key))
    except errors.IntegrityError:
        raise errors.IntegrityError(
            "the recovery code opens a master key this vault no longer uses (it was rotated since)"
        ) from None
    await finish(s)
    epoch = s.epoch
    async with s.exclusive():
        result = await _switch(s, key, name, new_passphrase)
        if s.locked:
            await s.open_with(key, epoch)
    log.info("recovered the vault with its recovery code; master key now in the %s source", name)
    return result
