"""The team vaults as the agent uses them: resolution, the token in the local vault,
write-through with check-and-set, the background refresh and token renewal, status.

Rules of this module:
- every remote call runs in a worker thread of its remote (``openbao.Nodes``) under
  the remote's ``deadline``: the event loop and other clients never wait on a node;
- the token is sealed in the local vault's meta (``agent.remotes.sealed``), opened
  at unlock and dropped at lock; a locked agent makes no call that needs it;
- after an AppRole login its role and secret ids are sealed beside it: a token that
  can no longer be renewed (its max TTL reached, or refused) is replaced by a new
  login, with no one at the keyboard;
- what a call started before a lock returns is thrown away (``Remote.epoch``);
- ``openbao`` (and with it hvac) is imported on the first remote call, so an agent
  whose config names no remote never loads it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import math
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Final, TypeVar

from agent.crypto import SecureStorage
from agent.remotes import AppRole, RemoteOptions, Secret, TokenInfo
from agent.remotes.cache import Cache, span
from agent.remotes.sealed import approle_meta, seal_approle, seal_token, token_meta, unseal_approle, unseal_token
from agent.state import Agent, Key
from client import errors
from client.validation import check_name

if TYPE_CHECKING:
    from agent.remotes.openbao import Nodes

__all__ = ["Remote", "Remotes", "EXPIRES_KEY", "legal", "expires"]

log = logging.getLogger("agent.remotes")
T = TypeVar("T")
WORKERS: Final = 4  # concurrent calls per remote (a refresh reads secrets in parallel)
EXPIRES_KEY: Final = "expires_at"  # in custom_metadata: the agent's expiry, a Unix time
_MISS, _FETCH = object(), object()


class Remote:
    """One ``[remote.NAME]``: its nodes, cache, token (while unlocked) and what status reports."""

    def __init__(self, options: RemoteOptions) -> None:
        self.options = options
        self.name = options.name
        self.cache = Cache(options.refresh, options.max_stale)
        self.pool = concurrent.futures.ThreadPoolExecutor(WORKERS, thread_name_prefix=f"remote-{self.name}")
        self._nodes: Nodes | None = None
        self.token: str | None = None
        self.approle: AppRole | None = None  # while unlocked, after an AppRole login: to log in again
        self.epoch = 0  # counts locks: results of calls begun before one are dropped
        self.reachable: bool | None = None  # None: not asked yet
        self.last_ok: float | None = None  # monotonic time a node last answered
        self.last_error: str | None = None
        self.token_expires: float | None = None  # monotonic; None: unknown or never
        self.token_ttl: float | None = None  # the TTL the last lookup or renewal gave
        self.renewable = False
        self.renew_at: float | None = None
        self.renewals = 0
        self.relogins = 0  # AppRole logins the agent made by itself
        self.creation_ttl = 0.0  # what a renewal gives back until the token's max TTL caps it
        self.needs_lookup = False
        self.next_sync = 0.0

    def __repr__(self) -> str:
        return f"Remote({self.name!r}, token={'held' if self.token else 'none'}, {self.cache!r})"

    @property
    def nodes_if_made(self) -> Nodes | None:
        return self._nodes

    @property
    def nodes(self) -> Nodes:
        if self._nodes is None:
            from agent.remotes.openbao import Nodes

            self._nodes = Nodes(self.options)
        return self._nodes

    def set_ttl(self, ttl: float, renewable: bool, now: float) -> None:
        self.token_ttl, self.renewable = ttl, renewable
        ends = ttl > 0 or self.creation_ttl > 0  # a TTL of 0 is "never", unless the token was made with one
        self.token_expires = now + ttl if ends else None
        # renew (or, for an AppRole, log in again) at 2/3 of the TTL, as Vault's own agent
        # does; never more often than every second
        due = ttl > 0 and (renewable or self.approle is not None)
        self.renew_at = now + max(1.0, ttl * 2 / 3) if due else None

    def forget(self) -> None:
        self.token = self.approle = None
        self.epoch += 1
        if self._nodes is not None:
            self._nodes.epoch += 1  # a call under way sends no further request
        self.cache.clear()
        self.token_expires = self.token_ttl = self.renew_at = None


class Remotes:
    """Every remote of the config, in resolution order (after the local vault)."""

    def __init__(self, agent: Agent, options: tuple[RemoteOptions, ...]) -> None:
        self.agent = agent
        self.remotes = [Remote(o) for o in options]
        self.by_name = {r.name: r for r in self.remotes}
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None

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
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for r in self.remotes:
            r.pool.shutdown(wait=False, cancel_futures=True)

    def forget(self) -> None:
        for r in self.remotes:
            r.forget()

    def unlocked(self, storage: SecureStorage) -> None:
        for r in self.remotes:
            sealed = self.agent.meta.get(token_meta(r.name))
            if sealed is None:
                continue
            try:
                r.token = unseal_token(storage, r.name, sealed)
                approle = self.agent.meta.get(approle_meta(r.name))
                r.approle = None if approle is None else unseal_approle(storage, r.name, approle)
            except errors.IntegrityError:
                log.error("the token of remote %s failed its integrity check; run `agent remote login %s`",
                          r.name, r.name)
                r.token = r.approle = None
                continue
            r.needs_lookup, r.next_sync = True, 0.0
        self.wake()

    def wake(self) -> None:
        if self._wake is not None:
            self._wake.set()

    def _next_due(self, now: float) -> float:
        due = [r.next_sync for r in self.remotes if r.token]
        due += [r.renew_at for r in self.remotes if r.token and r.renew_at is not None]
        due += [now for r in self.remotes if r.token and r.needs_lookup]
        return max(0.0, min(due) - now) if due else 3600.0

    async def _loop(self) -> None:
        assert self._wake is not None
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), self._next_due(time.monotonic()))
            except TimeoutError:
                pass
            self._wake.clear()
            for r in self.remotes:
                if self.agent.locked or r.token is None:
                    continue
                try:
                    await self._tend(r)
                except Exception:  # a bug here must not end the refresh and renewal of every remote
                    log.exception("remote %s: the background refresh failed", r.name)

    async def _tend(self, r: Remote) -> None:
        """A lookup after unlock, a renewal when due, a refresh when due; failures are logged."""
        now = time.monotonic()
        try:
            if r.needs_lookup:
                await self._lookup(r)
            if r.renew_at is not None and now >= r.renew_at:
                await self._renew(r)
            if now >= r.next_sync:
                await self.sync_one(r)
        except errors.AgentError as e:
            log.warning("remote %s: %s", r.name, e.message)
            r.next_sync = time.monotonic() + min(r.options.refresh, 5.0)  # retry soon, not in a tight loop
            if r.renew_at is not None and r.renew_at <= time.monotonic():
                r.renew_at = time.monotonic() + 1.0

    async def _lookup(self, r: Remote) -> None:
        token, epoch = self.token_for(r), r.epoch
        try:
            info = await self.call(r, epoch, lambda d: r.nodes.lookup_self(token, d))
        except errors.RemoteDenied:
            if r.approle is None:
                raise
            await self._relogin(r, "its token is no longer valid")
            return
        if info.ttl <= 0 < info.creation_ttl and r.approle is not None:  # at its very end
            await self._relogin(r, "its token expires now")
            return
        r.needs_lookup, r.creation_ttl = False, info.creation_ttl
        r.set_ttl(info.ttl, info.renewable, time.monotonic())

    async def _renew(self, r: Remote) -> None:
        if not r.renewable:  # an AppRole's token that is not renewable: log in again instead
            await self._relogin(r, "its token is not renewable")
            return
        token, epoch = self.token_for(r), r.epoch
        try:
            ttl = await self.call(r, epoch, lambda d: r.nodes.renew_self(token, d))
        except (errors.RemoteDenied, errors.RemoteUnavailable):  # past its max TTL: a 500, then a 403
            if r.approle is None:
                raise
            await self._relogin(r, "its token could not be renewed")
            return
        r.renewals += 1
        r.set_ttl(ttl, r.renewable, time.monotonic())
        log.info("remote %s: token renewed (TTL %.0f s)", r.name, ttl)
        if 0 < r.creation_ttl and ttl < r.creation_ttl:  # cut short by its max TTL: no renewal goes past it
            if r.approle is not None:
                await self._relogin(r, "its token reached its max TTL")
            else:
                log.warning("remote %s: the token reaches its max TTL in %.0f s; then run `agent remote login %s`",
                            r.name, ttl, r.name)

    async def _relogin(self, r: Remote, why: str) -> None:
        """A new token from the AppRole kept sealed, in place of one that cannot be renewed."""
        assert r.approle is not None
        await self._sign_in(r, None, r.approle)
        r.relogins += 1
        log.info("remote %s: logged in again with its AppRole (%s)", r.name, why)

    async def _sign_in(self, r: Remote, token: str | None, approle: AppRole | None) -> TokenInfo:
        """Check the token (or get one for ``approle``), seal it in the vault, hold it."""
        epoch = r.epoch
        if approle is not None:
            token = await self.call(r, epoch, lambda d: r.nodes.approle_login(approle.role_id, approle.secret_id, d))
        assert token is not None
        given = token
        info = await self.call(r, epoch, lambda d: r.nodes.lookup_self(given, d))
        async with self.agent._writing() as storage:  # sealed under the key current then: a rotation waits
            sealed = {token_meta(r.name): seal_token(storage, r.name, given)}
            if approle is not None:
                sealed[approle_meta(r.name)] = seal_approle(storage, r.name, approle)
            await self.agent.meta.save(sealed)
            if approle is None and self.agent.meta.get(approle_meta(r.name)) is not None:
                await self.agent.meta.drop(approle_meta(r.name))  # a token given by hand replaces the AppRole
        if self.agent.locked or r.epoch != epoch:
            raise errors.Locked("the agent was locked during the login; the token is kept for the next unlock")
        r.token, r.approle, r.needs_lookup, r.creation_ttl = given, approle, False, info.creation_ttl
        r.set_ttl(info.ttl, info.renewable, time.monotonic())
        return info

    # --- calls ----------------------------------------------------------------------------
    def token_for(self, r: Remote) -> str:
        if self.agent.locked:
            raise errors.Locked()
        if r.token is None:
            raise errors.RemoteDenied(f"remote {r.name!r} has no token; run `agent remote login {r.name}`")
        return r.token

    async def call(self, r: Remote, epoch: int, fn: Callable[[float], T]) -> T:
        """``fn(deadline)`` in a worker thread; at most the remote's deadline, whatever the nodes do."""
        if r.epoch != epoch or self.agent.locked:
            raise errors.Locked()
        limit = r.options.deadline
        deadline = time.monotonic() + limit

        def guarded(deadline: float) -> T:  # a call queued before a lock never starts after it
            if r.epoch != epoch:
                raise errors.Locked()
            return fn(deadline)

        future = asyncio.get_running_loop().run_in_executor(r.pool, guarded, deadline)
        try:
            result = await asyncio.wait_for(future, limit)
        except TimeoutError:
            r.reachable, r.last_error = False, f"no answer within {limit:g} s"
            raise errors.RemoteUnavailable(f"remote {r.name!r}: no node answered within {limit:g} s") from None
        except errors.RemoteUnavailable as e:
            r.reachable, r.last_error = False, e.message
            raise
        except errors.AgentError as e:
            self._answered(r)
            r.last_error = e.message
            raise
        if r.epoch != epoch:
            raise errors.Locked("the agent was locked while the team vault answered; its answer was dropped")
        self._answered(r)
        return result

    def _answered(self, r: Remote) -> None:
        r.reachable, r.last_ok, r.last_error = True, time.monotonic(), None

    # --- reads ----------------------------------------------------------------------------
    def _lookup_cached(self, r: Remote, key: Key, now: float) -> Any:
        """The value, ``_MISS`` (not in this remote) or ``_FETCH`` (ask the remote)."""
        cached = r.cache.usable(key[0], now)
        if cached is not None:
            value = cached.secret.values.get(key[1])
            return value if value is not None else _MISS
        return _MISS if r.cache.known_absent(key[0], now) else _FETCH

    def get(self, key: Key, expiry: bool) -> Any:
        """A team key: the value from the cache (no await), or an awaitable that fetches it."""
        now = time.monotonic()
        for r in self.remotes:
            if r.token is None:
                continue
            found = self._lookup_cached(r, key, now)
            if found is _FETCH:
                return self._fetch_get(key, expiry)
            if found is not _MISS:
                return self._shaped(r, key, found, expiry)
        raise self.not_found(key)

    def not_found(self, key: Key) -> errors.NotFound:
        check_name(key[0])
        check_name(key[1], "credential type")
        names = ", ".join(r.name for r in self.remotes if r.token) or "none logged in"
        return errors.NotFound(f"no credential {key[0]}/{key[1]} (local vault, remotes: {names})")

    def _shaped(self, r: Remote, key: Key, value: str, expiry: bool) -> Any:
        self.agent.autolock.last_use = time.monotonic()
        if not expiry:
            return value
        when = expires(r.cache.secrets[key[0]].secret.custom)
        return value if when is None else {"value": value, "expires_at": when}

    async def _fetch_get(self, key: Key, expiry: bool) -> Any:
        check_name(key[0])
        check_name(key[1], "credential type")
        failure: errors.AgentError | None = None
        for r in self.remotes:
            if r.token is None:
                continue
            now = time.monotonic()
            found = self._lookup_cached(r, key, now)
            if found is _FETCH:
                try:
                    await self.read(r, key[0])
                except (errors.RemoteUnavailable, errors.RemoteDenied) as e:
                    failure = failure or self._refusal(r, key[0], e)
                    continue
                found = self._lookup_cached(r, key, time.monotonic())
            if found is not _MISS and found is not _FETCH:
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
            f"max_stale ({span(r.options.max_stale)}): not served (last error: {why})")

    async def read(self, r: Remote, platform: str) -> Secret | None:
        token, epoch = self.token_for(r), r.epoch
        secret = await self.call(r, epoch, lambda d: r.nodes.read(token, platform, d))
        if secret is None:
            r.cache.drop(platform, time.monotonic())
        else:
            r.cache.put(platform, secret, time.monotonic())
        return secret

    async def sync_one(self, r: Remote) -> None:
        """Refresh the whole cache: list, compare versions, read what changed."""
        token, epoch = self.token_for(r), r.epoch
        r.next_sync = time.monotonic() + r.options.refresh
        names = await self.call(r, epoch, lambda d: r.nodes.names(token, d))
        platforms = [n for n in names if legal(n)]

        async def one(platform: str) -> None:
            try:
                await update(platform)
            except errors.RemoteDenied as e:  # one path the policy denies spoils no other
                log.warning("%s", e.message)
                r.cache.secrets.pop(platform, None)
                r.cache.denied.add(platform)

        async def update(platform: str) -> None:
            meta = await self.call(r, epoch, lambda d: r.nodes.meta(token, platform, d))
            cached = r.cache.secrets.get(platform)
            if meta is None or meta.deleted:
                r.cache.drop(platform, time.monotonic())
            elif cached is not None and cached.secret.version == meta.version and \
                    cached.secret.custom == meta.custom:
                r.cache.confirm(platform, time.monotonic())  # unchanged: no read
            else:
                await self.read(r, platform)

        r.cache.denied = set()
        await asyncio.gather(*(one(p) for p in platforms))
        if r.epoch == epoch:
            r.cache.listed_now(set(platforms), time.monotonic())

    async def sync(self, name: str | None) -> None:
        await self.agent.storage()
        chosen = [self.named(name)] if name is not None else [r for r in self.remotes if r.token]
        for r in chosen:
            await self.sync_one(r)

    # --- names and login -------------------------------------------------------------------
    def named(self, name: str) -> Remote:
        r = self.by_name.get(name)
        if r is None:
            known = ", ".join(self.by_name) or "none"
            raise errors.BadRequest(f"no remote named {name!r} in the config file (remotes: {known})")
        return r

    async def login(self, name: str, token: str | None, role_id: str | None, secret_id: str | None) -> dict[str, Any]:
        await self.agent.storage()
        r = self.named(name)
        if (token is None) == (role_id is None) or (role_id is not None) != (secret_id is not None):
            raise errors.BadRequest("give a token, or an AppRole's role_id and secret_id")
        approle = AppRole(role_id, secret_id) if role_id is not None and secret_id is not None else None
        info = await self._sign_in(r, token, approle)
        r.next_sync = 0.0  # a refresh now, with what this token may read
        self.wake()
        how = "with its AppRole" if approle else "with a token"
        log.info("remote %s: logged in %s (policies %s)", name, how, ", ".join(info.policies))
        return {"remote": name, "ttl_s": info.ttl, "renewable": info.renewable, "policies": list(info.policies),
                "auth": "approle" if approle else "token"}

def legal(name: str) -> bool:
    """Whether a name seen upstream is one the agent can serve (others are skipped)."""
    try:
        check_name(name)
    except errors.BadRequest:
        return False
    return True


def expires(custom: Mapping[str, str]) -> float | None:
    try:
        value = float(custom[EXPIRES_KEY])
    except (KeyError, ValueError):
        return None
    return value if math.isfinite(value) else None
