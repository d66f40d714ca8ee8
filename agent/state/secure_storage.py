"""``encrypt`` and ``decrypt``: the original ``SecureStorage`` API, run in the agent.

Rules of this module:
- tokens are made under the vault's data key, never the master key itself: a key
  made on the first ``encrypt``, kept in the vault's meta sealed under the master key
  (``crypto.seal_data_key``), and re-sealed with the rows by a key rotation, so a
  token stays readable after ``agent rotate-key`` (``agent.state.masterkey``);
- neither key leaves the agent; the data key is opened per request and not kept, so
  a ``lock`` drops it with the master key;
- sizes are bounded by the protocol's limits (``MAX_VALUE``, ``MAX_TOKEN``).
"""

from __future__ import annotations

from typing import Final

from agent import crypto
from agent.state.lockstate import LockState
from client import errors, protocol

__all__ = ["encrypt", "decrypt"]

DATA_KEY: Final = crypto.DATA_KEY


async def encrypt(s: LockState, data: str) -> bytes:
    if len(data) > protocol.MAX_VALUE or len(data.encode("utf-8")) > protocol.MAX_VALUE:
        raise errors.BadRequest(f"encrypt takes at most {protocol.MAX_VALUE} bytes of UTF-8 text")
    storage = await _data_storage(s, create=True)
    assert storage is not None
    s.touch()
    return crypto.encrypt_data(storage, data)


async def decrypt(s: LockState, token: bytes) -> str:
    if len(token) > protocol.MAX_TOKEN:
        raise errors.BadRequest(f"a token is at most {protocol.MAX_TOKEN} bytes; this one cannot be the agent's")
    storage = await _data_storage(s, create=False)
    if storage is None:
        raise errors.InvalidToken("this vault has made no tokens yet, so the token is another vault's (or none)")
    s.touch()
    return crypto.decrypt_data(storage, token)


async def _data_storage(s: LockState, *, create: bool) -> crypto.SecureStorage | None:
    """The data key's storage; None when there is none yet and ``create`` is false."""
    master = await s.storage()  # Locked, or unlocks a keystore vault on first need
    # read beside the master key with no await between: a rotation switches both at once
    sealed = s.meta.get(DATA_KEY)
    if sealed is not None:
        return crypto.open_data_key(master, sealed)
    if not create:
        return None
    # the first token of this vault: one data key, even for concurrent first calls, and
    # never sealed under a key that a rotation is replacing (rotation holds this lock)
    async with s.writing() as master:
        sealed = s.meta.get(DATA_KEY)
        if sealed is None:
            sealed = crypto.seal_data_key(master, crypto.generate_key())
            await s.meta.save({DATA_KEY: sealed})
        return crypto.open_data_key(master, sealed)
