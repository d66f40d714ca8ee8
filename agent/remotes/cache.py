"""What the agent holds of one team vault: the secrets fetched, in memory only.

Rules of this module:
- plaintext lives here only while the agent is unlocked: ``clear`` (on lock) drops
  every value at once (best effort in Python, as the local cache);
- a secret is served up to ``max_stale`` seconds after the remote last confirmed it
  (a read, or a refresh that saw its version unchanged), whether or not a node
  answers now; past that it is fetched again, or refused;
- a name the last listing did not show, or a read found absent, is a miss for
  ``refresh`` seconds without asking the remote again.
"""

from __future__ import annotations

import dataclasses
import time

from agent.remotes import Secret

__all__ = ["Cached", "Cache", "span"]


@dataclasses.dataclass(frozen=True, repr=False)
class Cached:
    secret: Secret
    confirmed: float  # monotonic time the remote last said this is current

    def __repr__(self) -> str:
        return f"Cached(version={self.secret.version}, <values hidden>)"


class Cache:
    def __init__(self, refresh: float, max_stale: float) -> None:
        self.refresh = refresh
        self.max_stale = max_stale
        self.secrets: dict[str, Cached] = {}
        self.absent: dict[str, float] = {}  # platform -> when a read found nothing
        self.denied: set[str] = set()  # listed, but the policy refused it: asked again on use
        self.listed: float | None = None  # monotonic time of the last complete refresh
        self.listed_wall: float | None = None

    def __repr__(self) -> str:
        return f"Cache({len(self.secrets)} secrets)"

    def clear(self) -> None:
        self.secrets = {}
        self.absent = {}
        self.denied = set()
        self.listed = self.listed_wall = None

    def put(self, platform: str, secret: Secret, now: float) -> None:
        self.secrets[platform] = Cached(secret, now)
        self.absent.pop(platform, None)

    def confirm(self, platform: str, now: float) -> None:
        cached = self.secrets.get(platform)
        if cached is not None:
            self.secrets[platform] = Cached(cached.secret, now)

    def drop(self, platform: str, now: float) -> None:
        self.secrets.pop(platform, None)
        self.absent[platform] = now

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
        """Whether the remote said recently (within ``refresh``) that there is no such secret."""
        if platform in self.secrets or platform in self.denied:
            return False
        seen = self.absent.get(platform)
        if seen is not None and now - seen <= self.refresh:
            return True
        return self.listed is not None and now - self.listed <= self.refresh

    def listed_now(self, platforms: set[str], now: float) -> None:
        """A complete refresh saw exactly ``platforms``: forget the others."""
        for gone in set(self.secrets) - platforms:
            del self.secrets[gone]
        self.absent = {}
        self.listed, self.listed_wall = now, time.time()

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
