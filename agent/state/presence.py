"""Proof that the user is there: the vault's passphrase, or a keystore vault's approval PIN.

What a process of the user cannot do by itself alone: approve a read that a rule keeps
for confirmation (``agent.approvals``), move the master key of a keystore vault to
another source, or make a new recovery code for it. A passphrase vault proves with its
passphrase; a keystore vault has no secret the user types, so it gets an approval PIN.

Rules of this module:
- the PIN is kept as a verifier sealed under the master key (``crypto.SEALED_META``):
  guessing it offline needs the master key first, and a rotation re-seals it;
- a guess through the agent waits: one at a time, a delay that grows with each wrong PIN
  up to a minute, the count kept in the vault (a restart resets nothing), a bounded queue;
- a PIN, once set, is replaced only with the current one; the first one can be set by
  any process of the user, so ``agent init`` of a keystore vault asks for it at a terminal
  (SECURITY.md says what that leaves open).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from typing import Final

import msgpack

from agent import crypto
from agent.state.lockstate import MAX_WAITING_UNLOCKS, LockState
from client import errors

__all__ = ["PIN_META", "MIN_PIN", "has_pin", "pin_failures", "set_pin", "prove"]

log = logging.getLogger("agent.state")

PIN_META: Final = crypto.SEALED_META + "approval_pin"
MIN_PIN: Final = 6
# the vault meta key of [consecutive wrong PINs, Unix time of the last one]: kept in the
# vault, so stopping and restarting the agent resets neither the count nor the wait
PIN_FAILURES: Final = "pin_failures"
# a wrong PIN costs 1 s more than the one before, up to a minute: a person who mistypes
# waits seconds; a million guesses at a six-digit PIN take about two years
PIN_DELAY_STEP: Final = 1.0
PIN_DELAY_MAX: Final = 60.0
# 16 MiB, ~30 ms: the verifier is sealed under the master key, so the KDF only adds to the
# counted delay for guesses made through the agent
PIN_KDF: Final = (2**14, 8, 1)
_CHECK: Final = b"credential-agent approval pin"


def pin_failures(s: LockState) -> int:
    """Wrong PINs in a row, as the vault keeps the count."""
    return _failures(s)[0]


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
        # as unlock's attempts: a bounded queue (a flood of wrong ones must not hold a right one
        # back for minutes); the source's own delay and count apply
        if s.unlocks_waiting >= MAX_WAITING_UNLOCKS:
            raise errors.Busy(f"{MAX_WAITING_UNLOCKS} attempts are already waiting; try again later")
        s.unlocks_waiting += 1
        try:
            opened = await source.open(secret)
        finally:
            s.unlocks_waiting -= 1
        if opened != storage.master_key():
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


def _failures(s: LockState) -> tuple[int, float]:
    raw = s.meta.get(PIN_FAILURES)
    try:
        count, last = msgpack.unpackb(raw) if raw is not None else (0, 0.0)
        return int(count), float(last)
    except (ValueError, TypeError, msgpack.UnpackException):
        return 0, 0.0


def pin_delay(failures: int) -> float:
    return min(PIN_DELAY_STEP * failures, PIN_DELAY_MAX)


async def _guess(s: LockState, pin: str, wrapped: bytes, params: crypto.KdfParams) -> None:
    """One attempt at a time, after the wait the last wrong PIN earned (kept in the vault)."""
    if s.recovers_waiting >= MAX_WAITING_UNLOCKS:
        raise errors.Busy(f"{MAX_WAITING_UNLOCKS} attempts are already waiting; try again later")
    s.recovers_waiting += 1
    try:
        async with s.recover_turn:
            count, last = _failures(s)
            delay = pin_delay(count)
            await asyncio.sleep(max(0.0, min(delay, last + delay - time.time())))
            try:
                await asyncio.to_thread(crypto.unwrap_key, wrapped, pin, params)
            except errors.BadPassphrase:
                await s.meta.save({PIN_FAILURES: msgpack.packb([count + 1, time.time()])})
                raise errors.BadPassphrase("that is not this vault's approval PIN") from None
            if count:
                await s.meta.drop(PIN_FAILURES)
    finally:
        s.recovers_waiting -= 1
