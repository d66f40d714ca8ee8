"""The team vaults as the agent uses them: resolution (local first, then each remote in
order), reads through the cache, the background loop that refreshes caches and tends
tokens, and the agent's hooks (``unlocked``, ``forget``).

Rules of this module:
- one ``Remote`` (``agent.remotes.remote``) per ``[remote.NAME]`` makes every call to
  its nodes, in its worker threads, under its deadline;
- the token's life (login, lookup, renewal, a new AppRole login) is
  ``agent.remotes.tokens``'s; writes are ``agent.remotes.writes``'s; listings, reads and
  refreshes are ``agent.remotes.refresh``'s;
- a get is answered from the cache without an await when it can be (a secret in use, or
  one confirmed within ``refresh``), and marks the secret in use: from then on every
  background refresh checks it; else it reads through, bounded (``agent.remotes.refresh``).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Mapping
from typing import Any, Final

from agent.crypto import SecureStorage
from agent.remotes import RemoteOptions, offline, refresh, tokens
from agent.remotes.cache import span
from agent.remotes.remote import Remote
from agent.state import Key
from agent.state.credentials import missing
from agent.state.lockstate import LockState
from client import errors
from client.validation import check_characters, check_key

__all__ = ["Remote", "Remotes", "EXPIRES_KEY", "expires"]

log = logging.getLogger("agent.remotes")
CLOSE_WAIT: Final = 2.0  # seconds `agent stop` waits for the background loop, at most
EXPIRES_KEY: Final = "expires_at"  # in custom_metadata: the agent's expiry, a Unix time
_MISS, _FETCH, _DENIED = object(), object(), object()


class Remotes:
    """Every remote of the config, in resolution order (after the local vault)."""

    def __init__(self, agent: LockState, options: tuple[RemoteOptions, ...]) -> None:
        self.agent = agent
        self.remotes = [Remote(o, agent) for o in options]
        self.by_name = {r.name: r for r in self.remotes}
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        # the team names of the listing under way, sorted, the caches' names_at they were
        # sorted at, and how many times they were sorted (agent.remotes.listing's: once
        # per change of the names, not once per listing or per page)
        self.listing_names: tuple[list[Key], list[str]] | None = None
        self.listing_of: tuple[int, ...] = ()
        self.listing_sorts = 0

    def __repr__(self) -> str:
        return f"Remotes({[r.name for r in self.remotes]!r})"

    @property
    def active(self) -> bool:
        return bool(self.remotes)

    # --- the agent's hooks and the background loop ---------------------------------------
    def start(self) -> None:
        self._wake = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def close(self) -> None:
        """Stop the background loop, in a bounded time whatever it is waiting on."""
        self._closed = True
        self.forget()  # a call under way is dropped when it returns, and no other starts
        if self._task is not None:
            self._task.cancel()
            done, _ = await asyncio.wait({self._task}, timeout=CLOSE_WAIT)
            if not done:
                log.warning("the team vaults' background task did not end within %g s; stopping anyway", CLOSE_WAIT)
        for r in self.remotes:
            r.pool.shutdown(wait=False, cancel_futures=True)

    def forget(self) -> None:
        self.listing_names = None
        for r in self.remotes:
            r.forget()

    def unlocked(self, storage: SecureStorage) -> None:
        for r in self.remotes:
            if tokens.open_sealed(r, storage) or tokens.from_chain(r) or tokens.by_cert(r):
                served = offline.restore(r, storage)
                if served:
                    log.info("remote %s: %d secrets in use restored from the offline cache", r.name, served)
        self.wake()

    def wake(self) -> None:
        if self._wake is not None:
            self._wake.set()

    @staticmethod
    def _due(r: Remote, now: float) -> float:
        """When ``r`` next needs its token looked up or renewed, or its cache refreshed."""
        if r.retry_at > now:
            return r.retry_at
        due = [r.next_sync, now if r.needs_lookup else r.next_sync]
        if r.denied_at is not None and r.denied_at + r.options.denied_grace > now:
            due.append(r.denied_at + r.options.denied_grace)  # then the offline cache is deleted
        return min(due + ([r.renew_at] if r.renew_at is not None else []))

    def _next_due(self, now: float) -> float:
        due = [self._due(r, now) for r in self.remotes if r.token or tokens.logs_in_itself(r)]
        return max(0.0, min(due) - now) if due else 3600.0

    async def _loop(self) -> None:
        assert self._wake is not None
        loop = asyncio.get_running_loop()
        while not self._closed:
            # a timer that sets the event, not wait_for (which can swallow a cancellation)
            timer = loop.call_later(self._next_due(time.monotonic()), self._wake.set)
            try:
                await self._wake.wait()
            finally:
                timer.cancel()
            self._wake.clear()
            for r in self.remotes:
                if self._closed or self.agent.locked or (r.token is None and not tokens.logs_in_itself(r)):
                    continue
                try:
                    await self._tend(r)
                    await offline.save(r)
                except Exception:  # a bug here must not end the refresh and renewal of every remote
                    log.exception("remote %s: the background refresh failed", r.name)

    async def _tend(self, r: Remote) -> None:
        """A lookup after unlock, a renewal when due, a refresh when due; a failure backs off
        (``Remote.failed``) and is logged when it is new or its count reaches a power of two."""
        now, epoch = time.monotonic(), r.epoch
        if now < r.retry_at:
            return
        if r.token is None:  # a remote that logs in by itself (its certificate): it counts and logs its failures
            try:
                await tokens.first_login(r)
            except errors.AgentError:
                return
        try:
            if r.needs_lookup:
                await tokens.lookup(r)
            if r.renew_at is not None and now >= r.renew_at:
                await tokens.renew(r)
            if now >= r.next_sync:
                await refresh.sync(r, full=False)
        except errors.AgentError as e:
            if r.epoch != epoch or self._closed:
                return  # a lock or a stop meanwhile: not a failure of the remote
            if isinstance(e, errors.RemoteDenied) and not r.needs_lookup:
                r.needs_lookup = True  # a 403: is it the path's policy, or the token itself? ask next time
            wait = r.failed(time.monotonic())
            if r.failures & (r.failures - 1) == 0 or e.message != r.last_failure:
                log.warning("remote %s: %s (try %d; the next in %.0f s)", r.name, e.message, r.failures, wait)
            r.last_failure = e.message
        else:
            r.succeeded()

    # --- reads ----------------------------------------------------------------------------
    def _lookup_cached(self, r: Remote, key: Key, now: float) -> Any:
        """The value, ``_MISS`` (not in this remote), ``_FETCH`` (ask the remote) or ``_DENIED``
        (its policy refused this path just now); past the grace after the token was refused,
        that refusal."""
        refused = r.refused(now)
        if refused is not None:
            raise refused
        cached = r.cache.served(key[0], now)
        if cached is not None:
            self._use(r, key[0])
            value = cached.value(key[1])
            return value if value is not None else _MISS
        if r.cache.refusal(key[0], now) is not None:
            return _DENIED
        return _MISS if r.cache.known_absent(key[0], now) else _FETCH

    def _use(self, r: Remote, platform: str) -> None:
        """Asked for: every refresh checks it from now on, and the offline cache keeps it."""
        if platform not in r.cache.used:
            r.cache.used.add(platform)
            self.wake()

    def get(self, key: Key, expiry: bool) -> Any:
        """A team key: the value from the cache (no await), or an awaitable that fetches it."""
        now = time.monotonic()
        for r in self.remotes:
            if r.token is None:
                if tokens.logs_in_itself(r):  # its first login is under way or due: wait for it
                    return self._fetch_get(key, expiry)
                continue
            found = self._lookup_cached(r, key, now)
            if found is _FETCH or found is _DENIED:
                return self._fetch_get(key, expiry)
            if found is not _MISS:
                return self._shaped(r, key, found, expiry)
        raise self.not_found(key)

    def not_found(self, key: Key) -> errors.NotFound:
        check_key(*key)
        names = ", ".join(r.name for r in self.remotes if r.token) or "none logged in"
        clash = next((r for r in self.remotes if key[0] in r.cache.names.collisions), None)
        if clash is None:
            return missing(key, f" (local vault, remotes: {names})")
        spellings = ", ".join(repr(s) for s in clash.cache.names.collisions[key[0]])
        return missing(
            key,
            f" (local vault, remotes: {names}; in remote {clash.name!r}, upstream names {spellings} all mean "
            f"{key[0]}, and none is served until all but one are renamed or removed)",
        )

    def _shaped(self, r: Remote, key: Key, value: str, expiry: bool) -> Any:
        try:  # what the local rules would refuse to store (a terminal escape, say) is not served either
            check_characters(key[0], value, key[1])
        except errors.InvalidCredential:
            raise errors.InvalidCredential(
                f"remote {r.name!r} holds a value of {key[0]}/{key[1]} with characters no stored value may have "
                "(control characters, or whitespace in an API key); it is not served: fix it upstream"
            ) from None
        self.agent.autolock.last_use = time.monotonic()
        if not expiry:
            return value
        when = expires(r.cache.secrets[key[0]].secret.custom)
        return value if when is None else {"value": value, "expires_at": when}

    async def _fetch_get(self, key: Key, expiry: bool) -> Any:
        check_key(*key)
        failure: errors.AgentError | None = None
        for r in self.remotes:
            try:
                await tokens.first_login(r)  # a remote that logs in by itself and has no token yet
            except errors.AgentError as e:
                failure = failure or e
                continue
            if r.token is None:
                continue
            found = self._lookup_cached(r, key, time.monotonic())
            if found is _DENIED:
                failure = failure or errors.RemoteDenied(r.cache.refusal(key[0], time.monotonic()) or "")
                continue
            if found is _FETCH:
                try:
                    await refresh.fetch(r, key[0])
                except errors.RemoteUnavailable as e:
                    cached = r.cache.usable(key[0], time.monotonic())  # no node answers: the copy held, if any
                    if cached is None:
                        failure = failure or self._refusal(r, key[0], e)
                        continue
                    self._use(r, key[0])
                    found = cached.value(key[1])
                except (errors.RemoteDenied, errors.ConfigError) as e:  # this remote says no: try the next
                    failure = failure or e
                    continue
                else:
                    found = self._lookup_cached(r, key, time.monotonic())
            if found is not None and found is not _MISS and found is not _FETCH and found is not _DENIED:
                return self._shaped(r, key, found, expiry)
        raise failure or self.not_found(key)

    def _refusal(self, r: Remote, platform: str, e: errors.AgentError) -> errors.AgentError:
        """With no node answering, a copy past ``max_stale`` is refused: say how stale it is."""
        age = r.cache.too_stale(platform, time.monotonic())
        if age is None or not isinstance(e, errors.RemoteUnavailable):
            return e
        why = (r.nodes_if_made and r.nodes_if_made.last_error) or e.message
        return errors.RemoteUnavailable(
            f"remote {r.name!r} is unreachable and its cached copy of {platform} is {span(age)} old, past "
            f"max_stale ({span(r.options.max_stale)}): not served (last error: {why})"
        )

    async def sync(self, name: str | None) -> None:
        """``agent remote sync``: the mount checked, then every listed secret (not only those in use)."""
        await self.agent.storage()
        chosen = [self.named(name)] if name is not None else [r for r in self.remotes if r.token or r.login_as]
        for r in chosen:
            await tokens.first_login(r)
            await refresh.sync(r, full=True)

    # --- names and login -------------------------------------------------------------------
    def named(self, name: str) -> Remote:
        r = self.by_name.get(name)
        if r is None:
            known = ", ".join(self.by_name) or "none"
            raise errors.BadRequest(
                f"no remote named {name!r} in the config file as this agent read it at start (remotes: {known}); "
                "after a change, restart the agent (`agent stop`, then `agent start`)"
            )
        return r

    async def login(
        self, name: str, token: str | None, role_id: str | None, secret_id: str | None, **jwt: str | None
    ) -> dict[str, Any]:
        """``agent remote login``; ``jwt``: ``jwt``, ``jwt_role``, ``jwt_file`` (``tokens.login``)."""
        await self.agent.storage()
        result = await tokens.login(self.named(name), token, role_id, secret_id, **jwt)
        self.wake()
        return result


def expires(custom: Mapping[str, str]) -> float | None:
    try:
        value = float(custom[EXPIRES_KEY])
    except (KeyError, ValueError):
        return None
    return value if math.isfinite(value) else None
