"""The master key wrapped under a passphrase (scrypt), stored in the vault's meta.

For headless machines, containers and CI, where no OS keystore works. Wrong
passphrases cost a growing delay, as ssh-agent's: 0.1 s per consecutive failure,
capped at 10 s. The delay belongs to the vault, not to the caller:

- the failure count and the time of the last failure are kept in the vault
  (``unlock_failures``), so restarting the agent neither resets the count nor
  skips the delay;
- the next attempt, whoever makes it, waits out the delay the last failure earned;
  a caller that hangs up cannot shorten it;
- one attempt runs at a time, and an attempt that started runs to its end and is
  counted, even when its caller went away; a caller that went away while waiting
  for its turn never guesses.

The same uid can copy the vault and guess offline at the KDF's speed, with no delay
(``benchmarks/kdf_guess_rate.py`` measures it): the scrypt cost is what a
passphrase's strength buys there.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Final

import msgpack

from agent import crypto
from agent.keys.base import Meta
from client import errors

__all__ = ["PassphraseSource", "FAILURES", "failures_of"]

log = logging.getLogger("agent.keys.passphrase")

# ssh-agent: 0.1 s per consecutive failure, capped at 10 s
FAIL_DELAY_STEP: Final = 0.1
FAIL_DELAY_MAX: Final = 10.0
# the vault meta key of [consecutive failures, Unix time of the last one]
FAILURES: Final = "unlock_failures"


def delay_after(failures: int) -> float:
    return min(FAIL_DELAY_STEP * failures, FAIL_DELAY_MAX)


def _stored_failures(raw: bytes | None) -> tuple[int, float]:
    """The failure count and the time of the last failure kept in the vault; (0, 0)
    for none or for anything that is not that pair (a count is never trusted blindly)."""
    if raw is None:
        return 0, 0.0
    try:
        count, last = msgpack.unpackb(raw)
    except (ValueError, TypeError, msgpack.UnpackException):
        return 0, 0.0
    if type(count) is not int or count < 0 or type(last) not in (int, float):
        return 0, 0.0
    return count, float(last)


def failures_of(meta: Meta) -> tuple[int, float]:
    """The consecutive wrong passphrases the vault records and the delay the last one
    earned, in seconds: what the next attempt (and a failed one's reply) waits."""
    count, _ = _stored_failures(meta.get(FAILURES))
    return count, delay_after(count)


class PassphraseSource:
    name = "passphrase"
    needs_passphrase = True

    def __init__(self, meta: Meta, deadline: float) -> None:
        self.meta = meta
        self.failures, last = _stored_failures(meta.get(FAILURES))
        # monotonic time before which no attempt starts: what is left of the last
        # failure's delay, never more than the delay itself (the clock may have moved back)
        delay = delay_after(self.failures)
        self._next = time.monotonic() + min(delay, max(0.0, last + delay - time.time())) if self.failures else 0.0
        self._turn = asyncio.Lock()

    def __repr__(self) -> str:
        return f"PassphraseSource(failures={self.failures})"

    async def _wrap(self, key: bytes, passphrase: str) -> dict[str, bytes]:
        params, wrapped = await asyncio.to_thread(crypto.wrap_key, key, passphrase)
        return {"kdf": crypto.pack_kdf(params), "wrapped_key": wrapped}

    async def create(self, key: bytes, vault_id: str, passphrase: str | None) -> tuple[dict[str, bytes], str | None]:
        if not passphrase:
            raise errors.BadRequest("a passphrase key source needs a non-empty passphrase")
        return await self._wrap(key, passphrase), None

    async def open(self, passphrase: str | None) -> bytes:
        if passphrase is None:
            raise errors.BadPassphrase("this vault is unlocked with its passphrase: run `agent unlock`")
        raw_kdf, wrapped = self.meta.get("kdf"), self.meta.get("wrapped_key")
        if raw_kdf is None or wrapped is None:
            raise errors.IntegrityError("the vault has no wrapped key")
        params = crypto.unpack_kdf(raw_kdf)
        async with self._turn:  # one attempt at a time: no parallel guessing
            wait = self._next - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)  # cancelled here, this caller never guesses
            attempt = asyncio.ensure_future(self._attempt(wrapped, passphrase, params))
            del passphrase  # the attempt holds it until the KDF is done, and no longer
            try:
                key = await asyncio.shield(attempt)
            except asyncio.CancelledError:
                await asyncio.wait([attempt])  # the turn is ours until the attempt is counted
                if not attempt.cancelled():
                    attempt.exception()  # its outcome is known (counted); nobody waits for it
                raise
            except errors.BadPassphrase:
                failed = True
            else:
                failed = False
        if failed:
            # the reply waits too, as ssh-agent's; the next attempt waits either way
            await asyncio.sleep(max(0.0, self._next - time.monotonic()))
            raise errors.BadPassphrase()
        return key

    async def _attempt(self, wrapped: bytes, passphrase: str, params: crypto.KdfParams) -> bytes:
        """One guess, run to its end and counted whatever becomes of its caller."""
        try:
            key = await asyncio.to_thread(crypto.unwrap_key, wrapped, passphrase, params)
        except errors.BadPassphrase:
            self.failures += 1
            delay = delay_after(self.failures)
            self._next = time.monotonic() + delay
            log.warning("wrong passphrase (%d consecutive failures); answering in %.1f s", self.failures, delay)
            await self._keep_failures(msgpack.packb([self.failures, time.time()]))
            raise
        if self.failures:
            self.failures, self._next = 0, 0.0
            await self._keep_failures(None)
        return key

    async def _keep_failures(self, value: bytes | None) -> None:
        try:
            if value is None:
                await self.meta.drop(FAILURES)
            else:
                await self.meta.save({FAILURES: value})
        except errors.StorageError as e:  # a read-only vault: the count lives in memory only
            log.warning("could not keep the failure count in the vault: %s", e.message)

    async def rewrap(self, new_key: bytes, passphrase: str | None) -> dict[str, bytes | None]:
        if not passphrase:
            raise errors.BadRequest("the new passphrase is empty")
        return dict(await self._wrap(new_key, passphrase))

    def forget(self) -> None:
        pass  # holds no key: the wrapped one needs the passphrase

    def preload(self) -> None:
        pass  # nothing opens before someone types the passphrase: a locked agent stays small

    def claim_early(self) -> bool:
        return False  # no key is read before someone types the passphrase

    async def tidy(self) -> None:
        pass  # a rotation commits the new wrapped key with the rows: nothing is left behind

    async def retire(self) -> None:
        for name in ("kdf", "wrapped_key", FAILURES):  # the old passphrase opens nothing any more
            await self.meta.drop(name)
