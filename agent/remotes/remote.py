"""One ``[remote.NAME]`` as the agent holds it: its nodes, cache, token (while unlocked),
what status reports, and every call to its nodes.

Rules of this module:
- every remote call runs in a worker thread of its remote (``openbao.Nodes``) under
  the remote's ``deadline``: the event loop and other clients never wait on a node;
- what a call started before a lock returns is thrown away (``Remote.epoch``), and a
  locked agent makes no call that needs the token;
- the kind's module (``agent.remotes.kinds``: ``openbao`` and hvac, ``aws`` and boto3) is
  imported on the first remote call, so an agent whose config names no remote of a kind
  never loads its library.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, TypeVar

from agent.remotes import Login, RemoteOptions
from agent.remotes.cache import Cache
from agent.state.lockstate import LockState
from client import errors

if TYPE_CHECKING:
    from agent.remotes.kinds import Backend

__all__ = ["Remote", "WORKERS", "BACKOFF_FIRST", "BACKOFF_MAX"]

T = TypeVar("T")
WORKERS: Final = 4  # concurrent calls per remote (a refresh reads secrets in parallel)
# after a failed lookup, renewal or refresh the next try waits 1, 2, 4 ... s (with jitter),
# up to a minute or the remote's refresh if that is shorter: an unreachable node or a dead
# token costs a few requests a minute, not a retry storm (Vault's own agent backs off so)
BACKOFF_FIRST: Final = 1.0
BACKOFF_MAX: Final = 60.0


class Remote:
    """One ``[remote.NAME]``: its nodes, cache, token (while unlocked) and what status reports."""

    def __init__(self, options: RemoteOptions, state: LockState) -> None:
        self.options = options
        self.name = options.name
        self.state = state  # the agent's lock state: no call while it is locked
        self.cache = Cache(options.refresh, options.max_stale)
        self.pool = concurrent.futures.ThreadPoolExecutor(WORKERS, thread_name_prefix=f"remote-{self.name}")
        self._nodes: Backend | None = None
        self.token: str | None = None
        self.login_as: Login | None = None  # while unlocked, after an AppRole or JWT login: to log in again
        self.epoch = 0  # counts locks: results of calls begun before one are dropped
        self.reachable: bool | None = None  # None: not asked yet
        self.last_ok: float | None = None  # monotonic time a node last answered
        self.last_error: str | None = None
        self.token_expires: float | None = None  # monotonic; None: unknown or never
        self.token_ttl: float | None = None  # the TTL the last lookup or renewal gave
        self.renewable = False
        self.renew_at: float | None = None
        self.renewals = 0
        self.relogins = 0  # AppRole or JWT logins the agent made by itself
        self.creation_ttl = 0.0  # what a renewal gives back until the token's max TTL caps it
        self.needs_lookup = False
        self.next_sync = 0.0  # the next background check of the keys in use (every ``poll``)
        self.next_list = 0.0  # ... that lists the prefix too (every ``refresh``)
        self.denied_at: float | None = None  # monotonic: when a node refused the token itself (revoked, expired)
        self.failures = 0  # background tries failed in a row
        self.last_failure: str | None = None  # its message, logged again only when it changes
        self.retry_at = 0.0  # monotonic: no background try before it
        self.login_failure: errors.AgentError | None = None  # the last certificate login's (agent.remotes.tokens)
        self.mount_ok = False  # the mount was found KV v2 since the last unlock or login (agent.remotes.mounts)
        self.inflight: dict[str, asyncio.Future[Any]] = {}  # a listing or a read under way, shared by its askers
        self.refreshes = 0  # complete refreshes and checks (agent.remotes.refresh)
        self.listings = 0  # of which listed the prefix
        self.last_refresh_requests: int | None = None
        self.logged: set[str] = set()  # upstream names already logged as not served
        # the offline cache (agent.remotes.offline): what was last written of it, and when (monotonic)
        self.offline_shape: tuple[Any, ...] = ()
        self.offline_written = 0.0

    def __repr__(self) -> str:
        return f"Remote({self.name!r}, token={'held' if self.token else 'none'}, {self.cache!r})"

    @property
    def nodes_if_made(self) -> Backend | None:
        return self._nodes

    @property
    def nodes(self) -> Backend:
        if self._nodes is None:
            from agent.remotes import kinds

            self._nodes = kinds.make(self.options)
        return self._nodes

    def set_ttl(self, ttl: float, renewable: bool, now: float) -> None:
        self.token_ttl, self.renewable = ttl, renewable
        ends = ttl > 0 or self.creation_ttl > 0  # a TTL of 0 is "never", unless the token was made with one
        self.token_expires = now + ttl if ends else None
        # renew (or, for an AppRole or a JWT, log in again) at 2/3 of the TTL, as Vault's own agent
        # does; never more often than every second
        due = ttl > 0 and (renewable or self.login_as is not None)
        self.renew_at = now + max(1.0, ttl * 2 / 3) if due else None

    def forget(self) -> None:
        self.token = self.login_as = None
        self.epoch += 1
        if self._nodes is not None:
            self._nodes.epoch += 1  # a call under way sends no further request
        self.cache.clear()
        self.token_expires = self.token_ttl = self.renew_at = None
        self.failures, self.retry_at = 0, 0.0
        self.login_failure = None
        self.denied_at = None
        self.mount_ok = False
        self.inflight = {}
        self.next_list = 0.0

    def refused(self, now: float) -> errors.RemoteDenied | None:
        """Past the grace after the token was refused: the refusal that replaces every cached value."""
        if self.denied_at is None or now - self.denied_at < self.options.denied_grace:
            return None
        return errors.RemoteDenied(
            f"remote {self.name!r} refused this agent's token (revoked or expired) {now - self.denied_at:.0f} s ago; "
            f"its cached values are no longer served: `agent remote login {self.name}`"
        )

    def failed(self, now: float) -> float:
        """A background try failed: the next waits longer (capped, with jitter); the wait."""
        self.failures += 1
        cap = min(BACKOFF_MAX, max(BACKOFF_FIRST, self.options.refresh))
        step: float = BACKOFF_FIRST * 2.0 ** min(self.failures - 1, 16)
        wait = min(cap, step) * random.uniform(0.5, 1.0)
        self.retry_at = now + wait
        self.next_sync = min(self.next_sync, self.retry_at)  # a failed refresh is tried again then
        return wait

    def succeeded(self) -> None:
        self.failures, self.retry_at = 0, 0.0

    # --- calls ----------------------------------------------------------------------------
    def token_for(self) -> str:
        if self.state.locked:
            raise errors.Locked()
        if self.token is None:
            raise errors.RemoteDenied(f"remote {self.name!r} has no token; run `agent remote login {self.name}`")
        return self.token

    async def call(self, epoch: int, fn: Callable[[float], T]) -> T:
        """``fn(deadline)`` in a worker thread; at most the remote's deadline, whatever the nodes do."""
        if self.epoch != epoch or self.state.locked:
            raise errors.Locked()
        limit = self.options.deadline
        deadline = time.monotonic() + limit

        def guarded(deadline: float) -> T:  # a call queued before a lock never starts after it
            if self.epoch != epoch:
                raise errors.Locked()
            return fn(deadline)

        future = asyncio.get_running_loop().run_in_executor(self.pool, guarded, deadline)
        # asyncio.wait, not wait_for: on 3.11 wait_for can swallow a cancellation that
        # comes as the call ends (gh-86296), and the agent would not stop
        done, _ = await asyncio.wait({future}, timeout=limit)
        if not done:
            future.cancel()
            self.reachable, self.last_error = False, f"no answer within {limit:g} s"
            raise errors.RemoteUnavailable(f"remote {self.name!r}: no node answered within {limit:g} s")
        try:
            result = future.result()
        except errors.RemoteUnavailable as e:
            self.reachable, self.last_error = False, e.message
            raise
        except errors.AgentError as e:
            self._answered()
            self.last_error = e.message
            raise
        if self.epoch != epoch:
            raise errors.Locked("the agent was locked while the team vault answered; its answer was dropped")
        self._answered()
        return result

    def _answered(self) -> None:
        self.reachable, self.last_ok, self.last_error = True, time.monotonic(), None
