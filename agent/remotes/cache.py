"""What the agent holds of one team vault: the secrets fetched, in memory only, under the
agent's (canonical) names, and which of them are in use.

Rules of this module:
- plaintext lives here only while the agent is unlocked: ``clear`` (on lock) drops
  every value at once (best effort in Python, as the local cache);
- a secret is kept under the agent's name for it, with the upstream name it was read
  from and its keys' mapping (``agent.remotes.upstream``): ``OpenAI``'s ``API_KEY`` is
  served as ``openai``'s ``api-key``;
- a secret in use (served, written, or asked for) is confirmed by every background
  refresh and served up to ``max_stale`` seconds after the remote last confirmed it,
  whether or not a node answers now; a secret held but not in use (read by an
  ``agent remote sync``) is served without asking only within ``refresh`` of its
  confirmation, else read again first: a refresh never checks it;
- a name the last listing did not show, or a read found absent, is a miss without
  asking the remote again for ``RELIST_AFTER`` seconds: a loop over a mistyped name
  costs the cluster at most one listing that often;
- ``names_at`` changes whenever the names served may have (a secret come or gone, its
  types changed, the whole cache dropped), and only then: a listing of the team names
  sorted when it last changed is still in order (``agent.remotes.listing``).
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections.abc import Mapping
from typing import Final

from agent.remotes import Secret
from agent.remotes.upstream import EMPTY, Names, types

__all__ = ["Cached", "Cache", "span", "RELIST_AFTER"]

# seconds: a miss (a name no listing showed) asks the remote again at most this often, so
# a key added upstream is found by a get within it, and a typo loop is one listing per period
RELIST_AFTER: Final = 10.0

_changes = itertools.count(1)  # names_at's values: never one twice, across caches and clears


@dataclasses.dataclass(frozen=True, repr=False)
class Cached:
    secret: Secret  # as read: its keys are the upstream ones
    confirmed: float  # monotonic time the remote last said this is current
    upstream: str  # the secret's name upstream, under the prefix
    keys: Names  # the agent's credential types -> the keys upstream, and what cannot be served

    def __repr__(self) -> str:
        return f"Cached(version={self.secret.version}, <values hidden>)"

    @property
    def types(self) -> Mapping[str, str]:
        served: Mapping[str, str] = self.keys.served
        return served

    def value(self, ctype: str) -> str | None:
        key = self.keys.served.get(ctype)
        return None if key is None else self.secret.values.get(key)


class Cache:
    def __init__(self, refresh: float, max_stale: float) -> None:
        self.refresh = refresh
        self.max_stale = max_stale
        self.clear()

    def __repr__(self) -> str:
        return f"Cache({len(self.secrets)} secrets, {len(self.used)} in use)"

    def clear(self) -> None:
        self.secrets: dict[str, Cached] = {}
        self.names_at = next(_changes)  # changed with the names served (the rules above)
        self.names: Names = EMPTY  # the last listing's
        self.listing_at: float | None = None  # monotonic time of the last listing, of any kind
        self.absent: dict[str, float] = {}  # platform -> when a read found nothing
        self.denied: dict[str, tuple[float, str]] = {}  # platform -> when the policy refused it, and how
        self.used: set[str] = set()  # platforms served, written or asked for since the unlock
        self.listed: float | None = None  # monotonic time of the last complete refresh
        self.listed_wall: float | None = None
        self.restored: set[str] = set()  # from the offline cache (agent.remotes.offline), not confirmed since

    # --- what the remote said ---------------------------------------------------------------
    def listing(self, names: Names, now: float) -> None:
        """A listing saw ``names``: forget the secrets it no longer shows (or shows as another name)."""
        for platform in list(self.secrets):
            if names.served.get(platform) != self.secrets[platform].upstream:
                self.forget(platform)
        self.names, self.listing_at, self.absent = names, now, {}

    def put(self, platform: str, name: str, secret: Secret, now: float) -> None:
        held = self.secrets.get(platform)
        cached = self.secrets[platform] = Cached(secret, now, name, types(secret.values))
        if held is None or held.types != cached.types:
            self.names_at = next(_changes)
        self.absent.pop(platform, None)
        self.denied.pop(platform, None)
        self.restored.discard(platform)

    def confirm(self, platform: str, now: float) -> None:
        cached = self.secrets.get(platform)
        if cached is not None:
            self.secrets[platform] = dataclasses.replace(cached, confirmed=now)
            self.restored.discard(platform)

    def forget(self, platform: str) -> None:
        """No copy of ``platform`` held (any more)."""
        if self.secrets.pop(platform, None) is not None:
            self.names_at = next(_changes)
        self.restored.discard(platform)

    def drop(self, platform: str, now: float) -> None:
        """The remote has no such secret (now)."""
        self.forget(platform)
        self.absent[platform] = now

    def deny(self, platform: str, message: str, now: float) -> None:
        self.forget(platform)
        self.denied[platform] = (now, message)

    def refreshed(self, now: float) -> None:
        self.listed, self.listed_wall = now, time.time()

    def restore(self, platform: str, name: str, secret: Secret, confirmed: float) -> None:
        """A secret in use from the offline cache, last confirmed at ``confirmed`` (monotonic)."""
        self.put(platform, name, secret, confirmed)
        self.used.add(platform)
        self.restored.add(platform)

    # --- what may be served -------------------------------------------------------------------
    def upstream_name(self, platform: str) -> str:
        """The name ``platform`` is read from and written to upstream: the listing's, else its own."""
        cached = self.secrets.get(platform)
        return cached.upstream if cached is not None else self.names.served.get(platform, platform)

    def served(self, platform: str, now: float) -> Cached | None:
        """The secret if it may be served without asking: in use and within ``max_stale``, or
        not in use and within ``refresh`` (no refresh confirmed it since)."""
        cached = self.usable(platform, now)
        if cached is None or (platform not in self.used and now - cached.confirmed > self.refresh):
            return None
        return cached

    def usable(self, platform: str, now: float) -> Cached | None:
        """The cached secret if it may still be served (within ``max_stale``)."""
        cached = self.secrets.get(platform)
        if cached is None or now - cached.confirmed > self.max_stale:
            return None
        return cached

    def too_stale(self, platform: str, now: float) -> float | None:
        """The age of a cached copy of ``platform`` that is past ``max_stale``; None if none is."""
        cached = self.secrets.get(platform)
        if cached is None or now - cached.confirmed <= self.max_stale:
            return None
        return now - cached.confirmed

    def known_absent(self, platform: str, now: float) -> bool:
        """Whether the remote said within ``RELIST_AFTER`` that there is no such secret."""
        if platform in self.secrets or platform in self.names.served:
            return False
        seen = self.absent.get(platform)
        if seen is not None and now - seen <= RELIST_AFTER:
            return True
        return self.listing_at is not None and now - self.listing_at <= RELIST_AFTER

    def refusal(self, platform: str, now: float) -> str | None:
        """The policy's refusal of ``platform`` if it came within ``RELIST_AFTER``: not asked again before."""
        denied = self.denied.get(platform)
        return denied[1] if denied is not None and now - denied[0] <= RELIST_AFTER else None

    def age(self, now: float) -> float | None:
        """Seconds since the last complete refresh; None before the first."""
        return None if self.listed is None else now - self.listed


def span(seconds: float) -> str:
    """``3 s``, ``12 min``, ``2.5 h``: an age for a message."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
