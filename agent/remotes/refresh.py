"""Keeping one team vault's cache current: listings, reads, the background refresh of the
secrets in use, ``agent remote sync`` of every one, and the on-demand read of a name
asked for, each bounded.

Rules of this module:
- a background check costs the cluster the same whatever the number of upstream
  secrets beyond those in use: one metadata read per secret in use (``Cache.used``) every
  ``poll`` seconds, and a read of those that changed; every ``refresh`` seconds one
  listing (the active node asked for first) comes before it;
- ``agent remote sync`` (``full``) checks the mount, then every listed secret: one
  metadata read per secret held, one read per secret not held;
- a name asked for that the cache does not hold is read on first use; one the last
  listing did not show is looked for by listing again, at most once every
  ``RELIST_AFTER`` seconds, and a path the policy refused is not asked again within
  that time either: a loop over a mistyped or forbidden name cannot flood the cluster;
- concurrent askers of one listing or one secret share one request (``_once``);
- upstream names go through ``agent.remotes.upstream``; what cannot be served is logged
  once per agent and shown in status;
- a key in use refused (403) is dropped only once the token is known to be accepted (the
  path's policy refused it); a refused token is the remote's refusal, after its grace.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from agent.remotes import Secret, mounts, tokens, upstream
from agent.remotes.remote import Remote
from client import errors

__all__ = ["read", "reread", "relist", "fetch", "sync", "status"]

log = logging.getLogger("agent.remotes")
T = TypeVar("T")


async def _once(r: Remote, key: str, make: Callable[[], Awaitable[T]]) -> T:
    """``make()``, or the same call already under way for ``key``: one request for many askers."""
    running = r.inflight.get(key)
    if running is None:
        running = r.inflight[key] = asyncio.ensure_future(make())
        running.add_done_callback(lambda f: _done(r, key, f))
    result: T = await asyncio.shield(running)
    return result


def _done(r: Remote, key: str, future: asyncio.Future[Any]) -> None:
    if r.inflight.get(key) is future:
        del r.inflight[key]
    if not future.cancelled():
        future.exception()  # retrieved: every asker may have gone (a lock, a closed connection)


async def read(r: Remote, platform: str) -> Secret | None:
    """Read ``platform`` (the agent's name) from its upstream name, into the cache."""
    return await _once(r, f"read:{platform}", lambda: _read(r, platform))


async def _read(r: Remote, platform: str) -> Secret | None:
    token, epoch = r.token_for(), r.epoch
    await mounts.ensure(r, token, epoch)
    name = r.cache.upstream_name(platform)
    try:
        secret = await r.call(epoch, lambda d: r.nodes.read(token, name, d))
    except errors.RemoteDenied as e:
        r.cache.deny(platform, e.message, time.monotonic())
        raise
    if secret is None:
        r.cache.drop(platform, time.monotonic())
    else:
        r.cache.put(platform, name, secret, time.monotonic())
        _report(r, r.cache.secrets[platform].keys, f"{name}/")
    return secret


async def reread(r: Remote, platform: str) -> None:
    """After a conflict: the version upstream now, or, if it cannot be had, no copy at all
    (the one held is known to be outdated)."""
    try:
        await read(r, platform)
    except errors.AgentError:
        r.cache.forget(platform)


async def relist(r: Remote) -> None:
    await _once(r, "list", lambda: _relist(r))


async def _relist(r: Remote) -> None:
    token, epoch = r.token_for(), r.epoch
    await mounts.ensure(r, token, epoch)
    listed = await r.call(epoch, lambda d: r.nodes.names(token, d))
    if listed is None:  # nothing there: an empty prefix, or a mount that changed since it was checked
        r.mount_ok = False
        await mounts.ensure(r, token, epoch)
    names = upstream.platforms(listed or [])
    r.cache.listing(names, time.monotonic())
    _report(r, names, "")


async def fetch(r: Remote, platform: str, *, bounded: bool = True) -> None:
    """A get (or a write) of ``platform``, not served from the cache: read it, listing first
    if the last listing did not show it (``bounded``: not within ``RELIST_AFTER`` of the last)."""
    now = time.monotonic()
    if platform not in r.cache.names.served and platform not in r.cache.secrets:
        if bounded and r.cache.known_absent(platform, now):
            return
        await relist(r)
        if platform not in r.cache.names.served:
            r.cache.absent[platform] = time.monotonic()
            return
    await read(r, platform)


async def sync(r: Remote, full: bool) -> None:
    """A background check of the secrets in use (every ``poll``), with the listing first
    every ``refresh``; ``full`` (``agent remote sync``): the mount, the listing, every secret."""
    token, epoch = r.token_for(), r.epoch
    now = time.monotonic()
    r.next_sync = now + r.options.check_every
    calls = r.nodes.calls
    if full:
        await mounts.check(r, token, epoch)
    listed = full or now >= r.next_list
    if listed:
        await relist(r)
        r.next_list = now + r.options.refresh  # a listing that failed is tried again at the next check
    served = r.cache.names.served
    chosen = served if full else [p for p in served if p in r.cache.used]

    denied: dict[str, str] = {}
    lost: list[str] = []  # of those, the ones a copy was held of

    async def one(platform: str) -> None:
        held = platform in r.cache.secrets
        try:
            await _update(r, token, epoch, platform)
        except errors.RemoteDenied as e:
            denied[platform] = e.message
            if held:
                lost.append(platform)

    await asyncio.gather(*(one(p) for p in chosen))
    if lost and await _token_refused(r, token):  # (a key no copy is held of has nothing to keep)
        raise errors.RemoteDenied(denied[lost[0]])
    for platform, message in denied.items():  # one path the policy denies spoils no other
        log.warning("%s", message)
        r.cache.deny(platform, message, time.monotonic())
    if r.epoch == epoch:
        r.cache.refreshed(time.monotonic())
        r.refreshes += 1
        r.listings += listed
        r.last_refresh_requests = r.nodes.calls - calls


async def _token_refused(r: Remote, token: str) -> bool:
    """After paths were refused: whether the token itself was (revoked, expired), so that
    its cached values stay for ``denied_grace`` rather than go at once (``tokens.lookup``
    marks it, or logs in again with an AppRole or a JWT), rather than those paths' policy."""
    try:
        await tokens.lookup(r)
    except errors.RemoteDenied:
        return True
    return r.token != token  # a new login meanwhile: the paths are asked again with it


async def _update(r: Remote, token: str, epoch: int, platform: str) -> None:
    """Confirm the copy held if its version is current upstream, else read it again."""
    cached = r.cache.secrets.get(platform)
    if cached is None:
        await read(r, platform)
        return
    meta = await r.call(epoch, lambda d: r.nodes.meta(token, cached.upstream, d))
    if meta is None or meta.deleted:
        r.cache.drop(platform, time.monotonic())
    elif cached.secret.version == meta.version and cached.secret.custom == meta.custom:
        r.cache.confirm(platform, time.monotonic())  # unchanged: no read
    else:
        await read(r, platform)


def _report(r: Remote, names: upstream.Names, within: str) -> None:
    """Log what cannot be served, each name once in the agent's life."""
    new = {k: v for k, v in names.problems(within).items() if k not in r.logged}
    if not new:
        return
    r.logged.update(new)
    shown = "; ".join(f"{k!r}: {v}" for k, v in sorted(new.items())[: upstream.MAX_SHOWN])
    more = f" (and {len(new) - upstream.MAX_SHOWN} more)" if len(new) > upstream.MAX_SHOWN else ""
    log.warning("remote %s: %d upstream name(s) not served as such: %s%s", r.name, len(new), shown, more)


def status(r: Remote) -> dict[str, Any]:
    """What status adds: the names upstream that are not served as such, and the cost of a refresh."""
    names = r.cache.names
    unusable = dict(names.unusable)
    collisions = [
        {"name": name, "upstream": list(spellings), "served": names.served.get(name)}
        for name, spellings in names.collisions.items()
    ]
    for platform, cached in r.cache.secrets.items():
        unusable.update({f"{cached.upstream}/{k}": why for k, why in cached.keys.unusable.items()})
        for ctype, keys in cached.keys.collisions.items():
            served = cached.types.get(ctype)
            collisions.append(
                {
                    "name": f"{platform}/{ctype}",
                    "upstream": [f"{cached.upstream}/{k}" for k in keys],
                    "served": None if served is None else f"{cached.upstream}/{served}",
                }
            )
    shown = sorted(unusable.items())[: upstream.MAX_SHOWN]
    return {
        "upstream_secrets": len(names.served),  # listed upstream, and served
        "used_secrets": len(r.cache.used),  # in use: what a background refresh checks
        "refreshes": r.refreshes,  # complete refreshes and checks of the keys in use since the agent started
        "listings": r.listings,  # of which listed the prefix (every `refresh`; the others every `poll`)
        "last_refresh_requests": r.last_refresh_requests,  # requests sent while the last one ran
        "collisions": sorted(collisions, key=lambda c: str(c["name"]))[: upstream.MAX_SHOWN],
        "unusable_count": len(unusable),
        "unusable": [{"name": name, "why": why} for name, why in shown],
    }
