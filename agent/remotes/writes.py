"""Writes to a team vault: ``set --remote`` and ``rm --remote``, with KV v2 check-and-set.

Rules of this module:
- a write goes against the version the agent last saw (its cache, else a read now):
  a version written upstream meanwhile is a ``Conflict`` and nothing is overwritten;
- ``rm`` of the last type deletes exactly the version seen (reversibly);
- after a conflict the secret is read again (``refresh.reread``): the agent no longer
  serves the version it now knows is outdated;
- a write goes to the upstream name and key the agent serves the name from (``OpenAI``'s
  ``API_KEY`` for ``openai/api-key``), else to the agent's name; the mount is checked first;
- the agent's metadata and expiry go to the secret's ``custom_metadata``, strings only.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Mapping
from typing import Any, TypeVar

from agent.remotes import Secret, mounts, refresh
from agent.remotes.cache import Cached
from agent.remotes.remote import Remote
from agent.remotes.team import EXPIRES_KEY, Remotes
from agent.state import Key
from agent.state.credentials import missing
from client import errors

__all__ = ["write", "delete"]
T = TypeVar("T")


async def _current(r: Remote, platform: str) -> Cached | None:
    """What the agent last saw of ``platform``: the version a check-and-set goes against.
    Not held: listed again and read now (a write is no loop: not bounded as a get's miss)."""
    await mounts.ensure(r, r.token_for(), r.epoch)
    if platform not in r.cache.secrets:
        await refresh.fetch(r, platform, bounded=False)
    return r.cache.secrets.get(platform)


async def _checked(r: Remote, platform: str, call: Awaitable[T]) -> T:
    """``call``, a check-and-set; after a conflict, ``platform`` read again before the error goes on."""
    try:
        return await call
    except errors.Conflict:
        await refresh.reread(r, platform)
        raise


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
    cached = await _current(r, key[0])
    current = cached.secret if cached else None
    values = dict(current.values) if current else {}
    held = cached.types.get(key[1]) if cached else None  # the key upstream it is served from
    if must_exist and held is None:
        raise missing(key, f" in remote {name!r} to update")
    custom: dict[str, str] | None = None
    if metadata is not None or expires_at is None or isinstance(expires_at, (int, float)):
        custom = dict(metadata) if metadata is not None else dict(current.custom if current else {})
        custom.pop(EXPIRES_KEY, None)
        if isinstance(expires_at, (int, float)):
            custom[EXPIRES_KEY] = repr(float(expires_at))
    values[held or key[1]] = value
    version = current.version if current else 0
    epoch, path = r.epoch, r.cache.upstream_name(key[0])
    new = await _checked(r, key[0], r.call(epoch, lambda d: r.nodes.write(token, path, values, custom, version, d)))
    now, wall = time.monotonic(), time.time()
    kept = custom if custom is not None else (current.custom if current else {})
    r.cache.put(key[0], path, Secret(new, values, kept, current.created if current else wall, wall), now)
    r.cache.used.add(key[0])
    remotes.agent.autolock.last_use = now
    remotes.wake()  # the new version into the offline cache
    return {"created": held is None, "remote": name, "version": new}


async def delete(remotes: Remotes, name: str, key: Key) -> None:
    await remotes.agent.storage()
    r = remotes.named(name)
    token = r.token_for()
    cached = await _current(r, key[0])
    held = cached.types.get(key[1]) if cached else None
    if cached is None or held is None:
        raise missing(key, f" in remote {name!r}")
    current, path = cached.secret, cached.upstream
    rest = {t: v for t, v in current.values.items() if t != held}
    epoch = r.epoch
    if rest:
        call = r.call(epoch, lambda d: r.nodes.write(token, path, rest, None, current.version, d))
        new = await _checked(r, key[0], call)
        r.cache.put(key[0], path, Secret(new, rest, current.custom, current.created, time.time()), time.monotonic())
    else:
        meta = await r.call(epoch, lambda d: r.nodes.meta(token, path, d))
        if meta is None or meta.version != current.version:
            await refresh.reread(r, key[0])
            raise errors.Conflict(
                f"{key[0]} in remote {name!r} changed upstream since this agent read it; "
                f"nothing was deleted (`agent remote sync {name}`, then retry)"
            )
        await r.call(epoch, lambda d: r.nodes.delete_version(token, path, current.version, d))
        r.cache.drop(key[0], time.monotonic())
    remotes.wake()
