"""Moving the master key to another key source (``rekey``), a recovery code, and
``recover`` with it. The master key stays the same: no credential is re-encrypted.

The order of a switch, so that a crash at any point leaves a vault that opens:

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
useless and drops it. Apart from ``agent.state`` (at its size limit), it takes the
same unlock and write locks a rotation takes.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import secrets
from typing import Any, Final

import msgpack

from agent import crypto, keys
from agent.state import Agent
from client import errors, protocol

__all__ = ["rekey", "recover", "make_recovery_code", "drop_recovery_code", "finish", "unfinished"]

log = logging.getLogger("agent.keyswitch")

RETIRED: Final = "retired_source"
RECOVERY: Final = ("recovery_kdf", "recovery_wrapped_key")
CODE_BYTES: Final = 20  # 160 bits: 32 base32 characters, eight groups of four
# the code carries 160 bits of its own: a light scrypt suffices (no one guesses 2**160)
RECOVERY_KDF: Final = (2**14, 8, 1)


def _normal(code: str) -> str:
    """A typed code as it was made: case, spaces and dashes do not matter."""
    return "".join(code.split()).replace("-", "").upper()


def _check_target(name: str, new_passphrase: str | None) -> None:
    if name not in protocol.KEY_SOURCES:
        raise errors.BadRequest("key_source must be " + " or ".join(repr(s) for s in protocol.KEY_SOURCES))
    if keys.implementations()[name].needs_passphrase and not new_passphrase:
        raise errors.BadRequest(f"a {name} key source needs a non-empty new passphrase")


async def _current_key(a: Agent, passphrase: str | None) -> bytes:
    """The unlocked vault's key; a passphrase vault wants its passphrase again first
    (as changing a password does), through the source, so a wrong one costs its delay."""
    storage = await a.storage()
    source = a.source()
    if source.needs_passphrase:
        if passphrase is None:
            raise errors.BadPassphrase(f"this needs the current passphrase of the {source.name} vault")
        if await source.open(passphrase) != storage.master_key():
            raise errors.IntegrityError("the passphrase opens a key that is not this vault's")
    return storage.master_key()


async def _switch(a: Agent, key: bytes, name: str, new_passphrase: str | None) -> dict[str, Any]:
    """Steps 1-3 of the module's order; returns what the caller reports."""
    old = a.source()
    target = keys.source_for(name, a.meta, a.options.keystore_deadline)
    changes: dict[str, bytes | None] = dict(await target.rewrap(key, new_passphrase))  # 1
    changes["key_source"] = name.encode()
    if old.name != name:
        changes[RETIRED] = old.name.encode()
    kept = {k: v for k, v in changes.items() if v is not None}
    await a.db(a.store.replace_all, [], kept, None, tuple(k for k, v in changes.items() if v is None))  # 2
    a.meta.committed(changes)
    a._source = target
    await target.tidy()  # its own leftovers: within the keystore, the old entry
    return {"key_source": name, "old_removed": await finish(a, old)}  # 3 (nothing to do within a source)


async def finish(a: Agent, old: keys.KeySource | None = None) -> bool:
    """Step 3: the retired source removes its home; False (logged) if it could not yet."""
    retired = a.meta.get(RETIRED)
    if retired is None:
        return True
    if old is None:
        old = keys.source_for(retired.decode(), a.meta, a.options.keystore_deadline)
    try:
        await old.retire()
    except errors.AgentError as e:
        log.warning("the old %s home of the master key is not removed yet (%s); will retry at the next unlock",
                    old.name, e.message)
        return False
    await a.meta.drop(RETIRED)
    log.info("removed the master key's old home (%s)", old.name)
    return True


def unfinished(a: Agent) -> bool:
    return a.meta.get(RETIRED) is not None


async def rekey(a: Agent, name: str, passphrase: str | None, new_passphrase: str | None) -> dict[str, Any]:
    _check_target(name, new_passphrase)
    await finish(a)
    key = await _current_key(a, passphrase)
    if a.source().name == name:
        raise errors.BadRequest(f"the master key is in the {name} source already "
                                "(a new passphrase: `agent rotate-key --new-passphrase`)")
    write_lock, unlock_lock = a._locks()
    async with unlock_lock, write_lock:
        result = await _switch(a, key, name, new_passphrase)
    log.info("moved the master key to the %s source", name)
    return result


async def make_recovery_code(a: Agent, passphrase: str | None) -> dict[str, Any]:
    """A new recovery code (replacing an earlier one); the reply is its only copy."""
    key = await _current_key(a, passphrase)
    raw = base64.b32encode(secrets.token_bytes(CODE_BYTES)).decode()
    params, wrapped = await asyncio.to_thread(crypto.wrap_key, key, raw, RECOVERY_KDF)
    await a.meta.save({RECOVERY[0]: msgpack.packb([params.salt, params.n, params.r, params.p]),
                       RECOVERY[1]: wrapped})
    log.info("made a new recovery code")
    return {"code": "-".join(raw[i:i + 4] for i in range(0, len(raw), 4))}


async def drop_recovery_code(a: Agent) -> bool:
    """After a key rotation: the code unwraps the old key, so it goes (True if there was one)."""
    if a.meta.get(RECOVERY[1]) is None:
        return False
    for name in RECOVERY:
        await a.meta.drop(name)
    log.info("dropped the recovery code: it opened the master key before the rotation")
    return True


async def recover(a: Agent, code: str, name: str, new_passphrase: str | None) -> dict[str, Any]:
    """Open the vault with its recovery code, give the key a new home, and unlock."""
    _check_target(name, new_passphrase)
    raw_kdf, wrapped = a.meta.get(RECOVERY[0]), a.meta.get(RECOVERY[1])
    if raw_kdf is None or wrapped is None:
        raise errors.NotFound("this vault has no recovery code")
    salt, n, r, p = msgpack.unpackb(raw_kdf)
    try:
        key = await asyncio.to_thread(crypto.unwrap_key, wrapped, _normal(code), crypto.KdfParams(salt, n, r, p))
    except errors.BadPassphrase:
        raise errors.BadPassphrase("that is not this vault's recovery code") from None
    try:
        a._check_key(crypto.SecureStorage(key))
    except errors.IntegrityError:
        raise errors.IntegrityError("the recovery code opens a master key this vault no longer uses "
                                    "(it was rotated since)") from None
    await finish(a)
    epoch = a._lock_epoch
    write_lock, unlock_lock = a._locks()
    async with unlock_lock, write_lock:
        result = await _switch(a, key, name, new_passphrase)
        if a.locked:
            await a._open(key, epoch)
    log.info("recovered the vault with its recovery code; master key now in the %s source", name)
    return result
