"""Writes to a team vault: ``set --remote`` and ``rm --remote``, with KV v2 check-and-set.

Rules of this module:
- a write goes against the version the agent last saw (its cache, else a read now):
  a version written upstream meanwhile is a ``Conflict`` and nothing is overwritten;
- ``rm`` of the last type deletes exactly the version seen (reversibly);
- the agent's metadata and expiry go to the secret's ``custom_metadata``, strings only.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from agent.remotes import Secret
from agent.remotes.remote import Remote
from agent.remotes.team import EXPIRES_KEY, Remotes
from agent.state import Key
from agent.state.credentials import missing
from client import errors

__all__ = ["write", "delete"]


async def _current(remotes: Remotes, r: Remote, platform: str) -> Secret | None:
    """What the agent last saw of ``platform``: the version a check-and-set goes against."""
    cached = r.cache.secrets.get(platform)
    return cached.secret if cached is not None else await remotes.read(r, platform)


async def write(
    remotes: Remotes,
    name: str,
    key: Key,
    value: str,
    metadata: Mapping[str, Any] | None,
    expires_at: Any,
    must_exist: bool,
) -> dict[str, Any]:
    await remotes.agent.storage()
    r = remotes.named(name)
    token = r.token_for()
    if metadata is not None and not all(isinstance(v, str) for v in metadata.values()):
        raise errors.BadRequest("metadata of a team key is the secret's custom_metadata: string values only")
    current = await _current(remotes, r, key[0])
    values = dict(current.values) if current else {}
    if must_exist and key[1] not in values:
        raise missing(key, f" in remote {name!r} to update")
    custom: dict[str, str] | None = None
    if metadata is not None or expires_at is None or isinstance(expires_at, (int, float)):
        custom = dict(metadata) if metadata is not None else dict(current.custom if current else {})
        custom.pop(EXPIRES_KEY, None)
        if isinstance(expires_at, (int, float)):
            custom[EXPIRES_KEY] = repr(float(expires_at))
    values[key[1]] = value
    version = current.version if current else 0
    epoch = r.epoch
    new = await r.call(epoch, lambda d: r.nodes.write(token, key[0], values, custom, version, d))
    now, wall = time.monotonic(), time.time()
    kept = custom if custom is not None else (current.custom if current else {})
    r.cache.put(key[0], Secret(new, values, kept, current.created if current else wall, wall), now)
    remotes.agent.autolock.last_use = now
    return {"created": current is None or key[1] not in current.values, "remote": name, "version": new}


async def delete(remotes: Remotes, name: str, key: Key) -> None:
    await remotes.agent.storage()
    r = remotes.named(name)
    token = r.token_for()
    current = await _current(remotes, r, key[0])
    if current is None or key[1] not in current.values:
        raise missing(key, f" in remote {name!r}")
    rest = {t: v for t, v in current.values.items() if t != key[1]}
    epoch = r.epoch
    if rest:
        new = await r.call(epoch, lambda d: r.nodes.write(token, key[0], rest, None, current.version, d))
        r.cache.put(key[0], Secret(new, rest, current.custom, current.created, time.time()), time.monotonic())
    else:
        meta = await r.call(epoch, lambda d: r.nodes.meta(token, key[0], d))
        if meta is None or meta.version != current.version:
            raise errors.Conflict(
                f"{key[0]} in remote {name!r} changed upstream since this agent read it; "
                f"nothing was deleted (`agent remote sync {name}`, then retry)"
            )
        await r.call(epoch, lambda d: r.nodes.delete_version(token, key[0], current.version, d))
        r.cache.drop(key[0], time.monotonic())
