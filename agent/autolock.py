"""Auto-lock: an idle timeout (sliding, reset by credential use) and a maximum
unlocked lifetime (absolute), each 0 for off, and the bound one unlock asked for
(``agent unlock --timeout``, absolute, until the next lock). One timer on the event
loop, set for the nearest deadline and moved on when use pushed the idle one out.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Final

__all__ = ["AutoLock", "MAX_BOUND"]

# the longest `agent unlock --timeout` (ten years): a bound, not a way to overflow a timer
MAX_BOUND: Final = 10 * 365 * 86400.0


class AutoLock:
    __slots__ = ("_lock", "_timer", "idle_timeout", "last_use", "max_unlocked", "unlocked_at", "until")

    def __init__(self, idle_timeout: float, max_unlocked: float, lock: Callable[[], None]) -> None:
        self.idle_timeout = idle_timeout
        self.max_unlocked = max_unlocked
        self._lock = lock  # called when a deadline passes
        self.unlocked_at = 0.0
        self.last_use = 0.0  # set directly by the hot path: one store, no call
        self._timer: asyncio.TimerHandle | None = None
        self.until: float | None = None  # monotonic: the bound of this unlock, if it asked for one

    def start(self) -> None:
        """At an unlock: both clocks start now."""
        self.unlocked_at = self.last_use = time.monotonic()
        self._schedule()

    def stop(self) -> None:
        """At a lock: no timer, and the next unlock is unbounded unless it asks."""
        self.until = None
        self._cancel()

    def _cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def bound(self, seconds: float) -> None:
        """Lock ``seconds`` from now whatever the use (replacing an earlier bound)."""
        self.until = time.monotonic() + seconds
        self._cancel()
        self._schedule()

    def deadline(self) -> float | None:
        """The monotonic time at which the agent locks itself, if a timer is on."""
        candidates = []
        if self.idle_timeout > 0:
            candidates.append(self.last_use + self.idle_timeout)
        if self.max_unlocked > 0:
            candidates.append(self.unlocked_at + self.max_unlocked)
        if self.until is not None:
            candidates.append(self.until)
        return min(candidates) if candidates else None

    def left(self) -> tuple[float | None, float | None]:
        """Seconds until the idle and the absolute deadline (None where off)."""
        now = time.monotonic()
        idle = max(0.0, self.last_use + self.idle_timeout - now) if self.idle_timeout > 0 else None
        unlocked = max(0.0, self.unlocked_at + self.max_unlocked - now) if self.max_unlocked > 0 else None
        return idle, unlocked

    def bound_left(self) -> float | None:
        """Seconds left of this unlock's own bound (None: it asked for none)."""
        return None if self.until is None else max(0.0, self.until - time.monotonic())

    def locks_in(self) -> float | None:
        """Seconds until the nearest deadline (None: no timer is on)."""
        deadline = self.deadline()
        return None if deadline is None else max(0.0, deadline - time.monotonic())

    def _schedule(self) -> None:
        deadline = self.deadline()
        if deadline is None:
            return
        loop = asyncio.get_running_loop()
        self._timer = loop.call_at(loop.time() + max(0.0, deadline - time.monotonic()), self._fire)

    def _fire(self) -> None:
        self._timer = None
        deadline = self.deadline()
        if deadline is not None and deadline <= time.monotonic() + 0.001:
            self._lock()
        else:
            self._schedule()
