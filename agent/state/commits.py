"""Group commit: credential writes that arrive while one transaction commits go into
the next one, together.

A durable commit (an fsync of SQLite's WAL) costs the same for one row as for a
thousand: writers that queue behind one commit share the next instead of paying one
each. ``agent.state.credentials`` plans and commits a group; this module only queues.

Rules of this module:
- a write is acknowledged (its future resolved) only after the transaction that holds it
  committed; a transaction that fails fails every write in it, none acknowledged;
- one group at a time, its writes planned in their order of arrival: two writes of one
  name land in the order they came;
- a group is run by the queue's own task, never by a request's: a caller that goes
  away (its connection closed) stops waiting, it does not stop the others' commit.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Final, Generic, TypeVar

from client import errors

__all__ = ["WriteQueue", "Commit", "GATHER_TURNS"]

# Turns of the event loop a group waits for writers before it commits. A writer answered
# by the last commit needs a few (its reply's task, its connection's next frame, that
# request's task) to queue its next write; a turn costs microseconds, a commit an fsync.
# Measured on an import of 20,000 records over 16 connections: 7.6 writes a transaction
# on average with no turn, 15 with 6.
GATHER_TURNS: Final = 6

W = TypeVar("W")
R = TypeVar("R")
# a group's writes -> one result or error per write, in order, after one transaction
Commit = Callable[[list[W]], Awaitable[Sequence[R | errors.AgentError]]]


def _own(e: BaseException) -> BaseException:
    """A copy of an agent error for each writer of a failed group (one exception object
    raised in many tasks would gather all their tracebacks)."""
    return errors.from_wire(e.code, e.message) if isinstance(e, errors.AgentError) else e


class WriteQueue(Generic[W, R]):
    """Writes waiting for the next transaction, and the counts ``agent status`` shows."""

    def __init__(self) -> None:
        self._waiting: list[tuple[W, asyncio.Future[R]]] = []
        self._task: asyncio.Task[None] | None = None
        self.transactions = 0  # groups committed
        self.writes = 0  # writes acknowledged through them
        self.largest = 0  # the most writes one transaction held

    def __repr__(self) -> str:
        return f"WriteQueue(waiting={len(self._waiting)}, transactions={self.transactions}, writes={self.writes})"

    async def submit(self, write: W, commit: Commit[W, R]) -> R:
        """``write``'s result once the transaction that holds it committed (its error, if it
        could not be made or its transaction failed). ``commit`` is the same for every write
        of a queue: the group that starts a drain runs it."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._waiting.append((write, future))
        if self._task is None:
            self._task = asyncio.create_task(self._drain(commit))
        return await future

    async def _drain(self, commit: Commit[W, R]) -> None:
        group: list[tuple[W, asyncio.Future[R]]] = []
        try:
            while self._waiting:
                for _ in range(GATHER_TURNS):  # writers that are on their way join this group
                    await asyncio.sleep(0)
                group, self._waiting = self._waiting, []
                try:
                    results = await commit([write for write, _ in group])
                except Exception as e:  # noqa: BLE001 - the transaction failed: every writer hears why
                    for _, future in group:
                        if not future.done():
                            future.set_exception(_own(e))
                    continue
                self.transactions += 1
                self.largest = max(self.largest, len(group))
                for (_, future), result in zip(group, results, strict=True):
                    if isinstance(result, errors.AgentError):
                        if not future.done():
                            future.set_exception(result)
                        continue
                    self.writes += 1
                    if not future.done():  # its caller may have gone: the write stands
                        future.set_result(result)
                group = []
        finally:
            self._task = None
            # cancelled (the agent stopping): what was not committed is not acknowledged
            left, self._waiting = [*group, *self._waiting], []
            for _, future in left:
                if not future.done():
                    future.set_exception(errors.Internal("the agent stopped before this write was committed"))
