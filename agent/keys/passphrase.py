"""The master key wrapped under a passphrase (scrypt), stored in the vault's meta.

For headless machines, containers and CI, where no OS keystore works. Wrong
passphrases cost a growing delay, as ssh-agent's: 0.1 s per consecutive failure,
capped at 10 s, held by the caller who guessed (other clients are served). One
attempt runs at a time (the agent's state serialises opens of this source).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Final

import msgpack

from agent import crypto
from agent.keys.base import Meta
from client import errors

__all__ = ["PassphraseSource"]

log = logging.getLogger("agent.keys.passphrase")

# ssh-agent: 0.1 s per consecutive failure, capped at 10 s
FAIL_DELAY_STEP: Final = 0.1
FAIL_DELAY_MAX: Final = 10.0


class PassphraseSource:
    name = "passphrase"
    needs_passphrase = True

    def __init__(self, meta: Meta, deadline: float) -> None:
        self.meta = meta
        self.failures = 0  # consecutive wrong passphrases

    def __repr__(self) -> str:
        return f"PassphraseSource(failures={self.failures})"

    async def _wrap(self, key: bytes, passphrase: str) -> dict[str, bytes]:
        params, wrapped = await asyncio.to_thread(crypto.wrap_key, key, passphrase)
        return {"kdf": msgpack.packb([params.salt, params.n, params.r, params.p]), "wrapped_key": wrapped}

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
        salt, n, r, p = msgpack.unpackb(raw_kdf)
        try:
            key = await asyncio.to_thread(crypto.unwrap_key, wrapped, passphrase, crypto.KdfParams(salt, n, r, p))
        except errors.BadPassphrase:
            self.failures += 1
            delay = min(FAIL_DELAY_STEP * self.failures, FAIL_DELAY_MAX)
            log.warning("wrong passphrase (%d consecutive failures); answering in %.1f s", self.failures, delay)
            # the delay holds this caller (and later unlock attempts) only, not other clients
            await asyncio.sleep(delay)
            raise
        self.failures = 0
        return key

    async def rewrap(self, new_key: bytes, passphrase: str | None) -> dict[str, bytes | None]:
        if not passphrase:
            raise errors.BadRequest("the new passphrase is empty")
        return dict(await self._wrap(new_key, passphrase))

    def forget(self) -> None:
        pass  # holds no key: the wrapped one needs the passphrase

    async def tidy(self) -> None:
        pass  # a rotation commits the new wrapped key with the rows: nothing is left behind
