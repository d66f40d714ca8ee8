"""Proof that the user is there: the vault's passphrase, or a keystore vault's approval PIN.

What a process of the user cannot do by itself alone: approve a read that a rule keeps
for confirmation (``agent.approvals``), move the master key of a keystore vault to
another source, or make a new recovery code for it. A passphrase vault proves with its
passphrase; a keystore vault has no secret the user types, so it gets an approval PIN.

Rules of this module:
- the PIN is kept as a verifier sealed under the master key (``crypto.SEALED_META``):
  guessing it offline needs the master key first, and a rotation re-seals it;
- a guess through the agent costs as a recovery code's does: one at a time, a growing
  delay after each wrong one (``masterkey``'s counters), so a flood slows itself;
- a PIN, once set, is replaced only with the current one; the first one can be set by
  any process of the user, so ``agent init`` of a keystore vault asks for it at a terminal
  (SECURITY.md says what that leaves open).
"""

from __future__ import annotations

import asyncio
import base64
import logging
from typing import Final

import msgpack

from agent import crypto
from agent.keys import passphrase
from agent.state.lockstate import MAX_WAITING_UNLOCKS, LockState
from client import errors

__all__ = ["PIN_META", "MIN_PIN", "has_pin", "set_pin", "prove"]

log = logging.getLogger("agent.state")

PIN_META: Final = crypto.SEALED_META + "approval_pin"
MIN_PIN: Final = 4
# 16 MiB, ~30 ms: the verifier is sealed under the master key, so the KDF only adds to the
# counted delay for guesses made through the agent
PIN_KDF: Final = (2**14, 8, 1)
_CHECK: Final = b"credential-agent approval pin"


def has_pin(s: LockState) -> bool:
    return s.meta.get(PIN_META) is not None


async def set_pin(s: LockState, pin: str, current: str | None) -> None:
    """Set a keystore vault's approval PIN; replacing one needs the current PIN."""
    storage = await s.storage()
    if s.source().needs_passphrase:
        raise errors.BadRequest("a passphrase vault needs no approval PIN: its passphrase shows that you are there")
    if len(pin) < MIN_PIN or not pin.isprintable():
        raise errors.BadRequest(f"an approval PIN has at least {MIN_PIN} printable characters")
    if has_pin(s):
        await prove(s, current)
    params, wrapped = await asyncio.to_thread(crypto.wrap_key, _CHECK, pin, PIN_KDF)
    packed = base64.b64encode(msgpack.packb([crypto.pack_kdf(params), wrapped])).decode()
    await s.meta.save({PIN_META: crypto.seal_meta(storage, PIN_META, packed)})
    log.info("set a new approval PIN")


async def prove(s: LockState, secret: str | None) -> None:
    """Return when ``secret`` is the vault's passphrase (passphrase vault) or its approval
    PIN (keystore vault); else ``BadPassphrase``, after the counted delay."""
    storage = await s.storage()
    source = s.source()
    if source.needs_passphrase:
        if not secret:
            raise errors.BadPassphrase("this needs the vault's passphrase, to show that you are there")
        if await source.open(secret) != storage.master_key():
            raise errors.IntegrityError("the passphrase opens a key that is not this vault's")
        return
    token = s.meta.get(PIN_META)
    if token is None:
        raise errors.BadPassphrase(
            "this keystore vault has no approval PIN yet, and this needs one to show that you are there: "
            "set it with `agent approve --set-pin`"
        )
    if not secret:
        raise errors.BadPassphrase("this needs the vault's approval PIN, to show that you are there")
    raw_kdf, wrapped = msgpack.unpackb(base64.b64decode(crypto.unseal_meta(storage, PIN_META, token)))
    await _guess(s, secret, wrapped, crypto.unpack_kdf(raw_kdf))


async def _guess(s: LockState, pin: str, wrapped: bytes, params: crypto.KdfParams) -> None:
    if s.recovers_waiting >= MAX_WAITING_UNLOCKS:
        raise errors.Busy(f"{MAX_WAITING_UNLOCKS} attempts are already waiting; try again later")
    s.recovers_waiting += 1
    try:
        async with s.recover_turn:
            await asyncio.sleep(passphrase.delay_after(s.recover_failures))
            try:
                await asyncio.to_thread(crypto.unwrap_key, wrapped, pin, params)
            except errors.BadPassphrase:
                s.recover_failures += 1
                raise errors.BadPassphrase("that is not this vault's approval PIN") from None
    finally:
        s.recovers_waiting -= 1
    s.recover_failures = 0
