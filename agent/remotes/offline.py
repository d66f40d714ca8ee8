"""A team vault's offline cache: the secrets in use kept sealed in the local vault, so that
after a restart, a crash, ``agent lock`` or an idle auto-lock, an agent whose remote does
not answer (a laptop on a train) still serves them, up to ``max_stale`` after the remote
last confirmed them.

Rules of this module:
- the cache is one vault meta entry, ``sealed/remote-cache/NAME``, sealed under the master
  key and bound to that name (``crypto.seal_meta``), as the token beside it
  (``agent.remotes.sealed``): it opens only with the vault, and ``agent rotate-key``
  re-seals it with the rows (``agent.state.resealing`` re-seals every sealed meta entry);
- it holds the secrets in use only (``Cache.used``: what a refresh checks), never those
  an ``agent remote sync`` read and nothing used: its size grows with the keys in use;
- it is bound to where it came from (the remote's nodes, mount and prefix): after the
  config points the remote elsewhere it is not used, and the next write replaces it;
- each secret carries the wall-clock time the remote last confirmed it, so ``max_stale``
  runs from that confirmation, not from the restart; a clock set back counts as no time
  passed, never as time gained. It is written when what it holds changes, and otherwise
  at most every ``WRITE_EVERY`` seconds as confirmations move on: after a restart a copy is
  at most that much older than the agent knew, so it is refused that much earlier, never later;
- a refusal of the token itself (``Remote.denied_at``) is written into it at once; once
  ``denied_grace`` has passed the entry is deleted (at the next pass of the background
  loop, or at the next unlock), and the values stop being served at that moment in any case;
- it is written and deleted on the storage thread under the key current inside
  ``LockState.writing()``, and only while unlocked: a lock drops the memory, never the entry.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any, Final

from agent import crypto
from agent.crypto import SecureStorage
from agent.remotes import Secret
from agent.remotes.remote import Remote
from client import errors

__all__ = ["cache_meta", "restore", "save", "status", "WRITE_EVERY"]

log = logging.getLogger("agent.remotes")
# seconds: confirmations alone (nothing changed upstream) are written at most this often
WRITE_EVERY: Final = 300.0
_FORMAT: Final = 1


def cache_meta(name: str) -> str:
    return f"{crypto.SEALED_META}remote-cache/{name}"


def _wall(mono: float, now: float, wall: float) -> float:
    return wall - (now - mono)


def _mono(when: float, now: float, wall: float) -> float:
    return now - max(0.0, wall - when)  # a clock set back: no time passed, never time gained


def _payload(r: Remote, now: float, wall: float) -> dict[str, Any]:
    secrets = {}
    for platform in sorted(r.cache.used):
        cached = r.cache.secrets.get(platform)
        if cached is None:
            continue
        s = cached.secret
        secrets[platform] = {
            "upstream": cached.upstream,
            "version": s.version,
            "values": s.values,
            "custom": s.custom,
            "created": s.created,
            "updated": s.updated,
            "confirmed": _wall(cached.confirmed, now, wall),
        }
    denied = None if r.denied_at is None else _wall(r.denied_at, now, wall)
    return {"format": _FORMAT, "origin": _origin(r), "secrets": secrets, "denied": denied}


def _origin(r: Remote) -> list[Any]:
    """Where the secrets came from: a config pointing the remote elsewhere since (other
    nodes, mount or prefix) does not get them."""
    o = r.options
    return [o.kind, o.region, list(o.urls), o.mount, o.prefix]


def _shape(payload: dict[str, Any]) -> tuple[Any, ...]:
    """What, when it changes, is written at once: the secrets held and their versions, the
    refusal. Never a value: this stays in memory after a lock (a new value is a new version)."""
    held = sorted(
        (p, s["upstream"], s["version"], json.dumps(s["custom"], sort_keys=True)) for p, s in payload["secrets"].items()
    )
    return (*held, payload["denied"] is not None)


async def save(r: Remote) -> None:
    """Write the offline cache if it changed, or its confirmations are ``WRITE_EVERY`` old;
    delete it once a refusal of the token is past ``denied_grace``. A no-op while locked."""
    state, epoch = r.state, r.epoch
    if state.locked or r.token is None:
        return
    now, wall = time.monotonic(), time.time()
    name = cache_meta(r.name)
    if r.refused(now) is not None:
        if state.meta.get(name) is not None:
            await _drop(r, "its token was refused")
        return
    payload = _payload(r, now, wall)
    shape = _shape(payload)
    if shape == r.offline_shape and now - r.offline_written < WRITE_EVERY:
        return
    if not payload["secrets"] and state.meta.get(name) is None:
        r.offline_shape, r.offline_written = shape, now
        return
    try:
        async with state.writing() as storage:
            if r.epoch != epoch:
                return  # locked meanwhile: nothing of this unlock is written after it
            await state.meta.save({name: crypto.seal_meta(storage, name, json.dumps(payload))})
    except errors.Locked:
        return
    except errors.StorageError as e:
        if r.offline_shape != ("failed",):
            log.warning("remote %s: the offline cache could not be written: %s", r.name, e.message)
        r.offline_shape = ("failed",)
        return
    r.offline_shape, r.offline_written = shape, now


async def _drop(r: Remote, why: str) -> None:
    try:
        async with r.state.writing():
            await r.state.meta.drop(cache_meta(r.name))
    except (errors.Locked, errors.StorageError):
        return
    r.offline_shape, r.offline_written = (), 0.0
    log.warning("remote %s: the offline cache was deleted: %s", r.name, why)


def restore(r: Remote, storage: SecureStorage) -> int:
    """At unlock, with the token opened: the secrets in use from the offline cache, each
    confirmed when the remote last said so; how many. A refusal of the token written there
    is held again (``Remote.denied_at``); past ``denied_grace`` nothing is restored, and the
    background loop's next ``save`` deletes the entry."""
    name = cache_meta(r.name)
    sealed = r.state.meta.get(name)
    if sealed is None:
        return 0
    now, wall = time.monotonic(), time.time()
    try:
        payload = json.loads(crypto.unseal_meta(storage, name, sealed))
        if not isinstance(payload, dict) or payload.get("format") != _FORMAT:
            raise ValueError
        if payload.get("origin") != _origin(r):
            log.info("remote %s: the offline cache came from another place (url, mount, prefix); not used", r.name)
            return 0
        denied = payload.get("denied")
        if denied is not None:
            r.denied_at = _mono(float(denied), now, wall)
            if r.refused(now) is not None:
                return 0
        for platform, s in payload["secrets"].items():
            version = s["version"]
            if not isinstance(version, (int, str)) or isinstance(version, bool):
                raise TypeError
            secret = Secret(
                version,
                {str(k): str(v) for k, v in s["values"].items()},
                {str(k): str(v) for k, v in s["custom"].items()},
                float(s["created"]),
                float(s["updated"]),
            )
            r.cache.restore(str(platform), str(s["upstream"]), secret, _mono(float(s["confirmed"]), now, wall))
    except (errors.IntegrityError, ValueError, KeyError, TypeError, AttributeError):
        log.error("remote %s: the offline cache failed its integrity check; it is not used", r.name)
        r.cache.clear()
        return 0
    r.offline_shape, r.offline_written = _shape(_payload(r, now, wall)), now
    return len(r.cache.restored)


def status(r: Remote) -> dict[str, Any]:
    """What status adds: the secrets served from the offline cache (not confirmed by the
    remote since the unlock that restored them), and the age of the oldest confirmation."""
    now = time.monotonic()
    restored = [r.cache.secrets[p] for p in r.cache.restored if p in r.cache.secrets]
    oldest = min((c.confirmed for c in restored), default=None)
    return {
        "offline_cache_stored": r.state.meta.get(cache_meta(r.name)) is not None,
        "offline_secrets": len(restored),  # served from the offline cache, unconfirmed since the unlock
        "offline_age_s": None if oldest is None else round(now - oldest, 3),
    }
