"""Reads waiting for the user's approval, the approvals the user gave, and scoped grants.

A read that a rule keeps for confirmation (``agent.access``) waits here until the user
answers from a channel the asking process does not own: ``agent approve`` in another
terminal, with the vault's passphrase or approval PIN (``agent.state.presence``), so the
asking process cannot approve itself. An approval is remembered for that process (its
pid and start time: a reused pid is another process), for that program (its executable,
and script where it is a Python one), or for a while, as the user chose; a denial or no
answer within ``confirm_timeout`` is ``client.Denied``. Nothing waits forever: a request
waits at most the timeout, and at most ``MAX_PENDING`` wait at once.

A scoped grant (``agent exec --grant``, ``agent run --grant``) names the keys a process
tree may read: its root (pid and start time) and every descendant read those without a
question, and anything else only with the user's approval, whatever the rules say of it
elsewhere. A grant never widens access: the granting process may only grant what it may
read itself (``agent.consent``), and only to its own tree. It ends with its root process.

Rules of this module: it holds the pending requests, the remembered approvals and the
grants, in memory (an agent restart forgets approvals, as ssh-agent forgets confirmed keys); it
never sees a value or a secret.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final

from agent.access import describe_caller
from agent.transport import Peer
from agent.transport.callers import parent_of, start_time
from client import errors

__all__ = ["Approvals", "MAX_PENDING", "MAX_TREES", "REMEMBER"]

log = logging.getLogger("agent.approvals")

MAX_PENDING: Final = 64
PER_PROCESS: Final = 4  # reads of one process waiting at once
MAX_TREES: Final = 256  # process trees with a grant at once
MAX_DEPTH: Final = 64  # ancestors looked at for a grant's root
# what an approval covers: this process, this program, or (a duration) any caller for a while
REMEMBER: Final = ("once", "process", "program")

Key = tuple[str, str]


@dataclasses.dataclass
class Pending:
    id: int
    key: Key
    peer: Peer
    started: int | None
    why: str  # what keeps the read for approval: a rule, or a grant's tree
    asked: float
    answer: asyncio.Future[str]  # "process" | "program" | "once" | "<seconds>" | "denied"


@dataclasses.dataclass(frozen=True)
class Grant:
    key: Key
    until: float | None  # time.monotonic(); None: for as long as the agent runs
    process: tuple[int | None, int | None] | None = None  # (pid, start time)
    program: tuple[tuple[int, int] | None, str | None] | None = None  # (executable's (dev, inode), script)

    def covers(self, key: Key, peer: Peer, now: float) -> bool:
        if key != self.key or (self.until is not None and now > self.until):
            return False
        if self.process is not None:
            return self.process == (peer.pid, peer.started) and peer.started is not None
        if self.program is not None:
            return self.program == (peer.exe_id, peer.caller) and peer.exe_id is not None
        return True


@dataclasses.dataclass(frozen=True)
class Tree:
    """A scoped grant: ``keys`` for the process tree under ``root`` (pid, start time)."""

    root: tuple[int, int]
    keys: frozenset[Key]


class Approvals:
    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.pending: dict[int, Pending] = {}
        self.grants: list[Grant] = []
        self.trees: dict[tuple[int, int], Tree] = {}
        # the terminal `agent approve --here` named, where a pinentry asks
        self.prompt_tty: str | None = None
        # pids with an `approve` whose secret is being checked: one attempt a process at a time
        self.proving: set[int | None] = set()
        self._ids = itertools.count(1)

    # --- scoped grants -----------------------------------------------------------------------
    def add_tree(self, peer: Peer, keys: frozenset[Key]) -> None:
        pid, started = peer.pid, peer.started  # the granting process as it connected
        if pid is None or started is None:
            raise errors.Denied("the granting process cannot be named (no pid from the kernel); nothing was granted")
        self.trees = {root: t for root, t in self.trees.items() if start_time(root[0]) == root[1]}  # ended roots
        if len(self.trees) >= MAX_TREES and (pid, started) not in self.trees:
            raise errors.Busy(f"{MAX_TREES} process trees hold grants already; nothing was granted")
        held = self.trees.get((pid, started))
        self.trees[(pid, started)] = Tree((pid, started), keys | (held.keys if held else frozenset()))
        log.info("granted %d credentials to the process tree of pid %d", len(keys), pid)

    def tree_of(self, peer: Peer) -> Tree | None:
        """The grant whose tree ``peer`` is in (its own, or its nearest ancestor's), if any."""
        if not self.trees or peer.pid is None or peer.started is None:
            return None
        pid: int = peer.pid
        for depth in range(MAX_DEPTH):
            up = parent_of(pid)
            if up is None or (depth == 0 and up[1] != peer.started):
                return None  # the process that connected is gone: its pid names another now
            tree = self.trees.get((pid, up[1])) if up[1] is not None else None
            if tree is not None:
                return tree
            if up[0] <= 1:
                return None
            pid = up[0]
        return None

    def __repr__(self) -> str:
        return f"Approvals(pending={len(self.pending)}, grants={len(self.grants)})"

    def granted(self, key: Key, peer: Peer) -> bool:
        now = time.monotonic()
        self.grants = [g for g in self.grants if g.until is None or g.until >= now]
        return any(g.covers(key, peer, now) for g in self.grants)

    async def ask(self, key: Key, peer: Peer, why: str, prompt: Callable[[int], Awaitable[None]] | None = None) -> None:
        """Return once the user approves this read; ``Denied`` if they deny it or do not answer
        in time. ``prompt(request)`` asks the user itself (a pinentry), while the read waits."""
        if self.granted(key, peer):
            return
        who = describe_caller(peer)
        if len(self.pending) >= MAX_PENDING:
            raise errors.Denied(f"{MAX_PENDING} reads already wait for approval; {key[0]}/{key[1]} was not read")
        if sum(p.peer.pid == peer.pid for p in self.pending.values()) >= PER_PROCESS:
            # one process cannot fill the queue and push out the reads of others
            raise errors.Denied(f"this process has {PER_PROCESS} reads waiting for approval already")
        pending = Pending(
            next(self._ids),
            key,
            peer,
            peer.started,
            why,
            time.time(),
            asyncio.get_running_loop().create_future(),
        )
        self.pending[pending.id] = pending
        log.info("%s/%s: waiting for approval of %s (request %d)", *key, who, pending.id)
        asking = None if prompt is None else asyncio.ensure_future(prompt(pending.id))
        try:
            # asyncio.wait, not wait_for: a cancellation (the client went away) is never swallowed
            await asyncio.wait([pending.answer], timeout=self.timeout)
        finally:
            self.pending.pop(pending.id, None)
            if asking is not None:
                asking.cancel()  # the pinentry goes when the question does
        if not pending.answer.done():
            pending.answer.cancel()
            raise errors.Denied(
                f"{key[0]}/{key[1]} needs approval ({why}), and none came within {self.timeout:g} s: "
                "run `agent approve` in another terminal while the program waits, or give it a rule or a grant"
            )
        answer = pending.answer.result()
        if answer == "denied":
            raise errors.Denied(f"reading {key[0]}/{key[1]} was denied by the user")
        self._remember(pending, answer)

    def _remember(self, pending: Pending, answer: str) -> None:
        if answer == "once":
            return
        if answer == "process":
            self.grants.append(Grant(pending.key, None, process=(pending.peer.pid, pending.started)))
        elif answer == "program":
            self.grants.append(Grant(pending.key, None, program=(pending.peer.exe_id, pending.peer.caller)))
        else:
            self.grants.append(Grant(pending.key, time.monotonic() + float(answer)))

    def listing(self) -> list[dict[str, Any]]:
        return [
            {
                "id": p.id,
                "platform": p.key[0],
                "credential_type": p.key[1],
                "pid": p.peer.pid,
                "exe": p.peer.exe,
                "caller": p.peer.caller,
                "why": p.why,
                "asked": p.asked,
                "waits_s": round(max(0.0, self.timeout - (time.time() - p.asked)), 1),
            }
            for p in self.pending.values()
        ]

    def answer(self, request: int, answer: str) -> dict[str, Any]:
        """Resolve request ``request`` (the caller proved presence before this)."""
        pending = self.pending.get(request)
        if pending is None or pending.answer.done():
            raise errors.NotFound(f"no read waits for approval as request {request} (it was answered or timed out)")
        pending.answer.set_result(answer)
        verb = "denied" if answer == "denied" else "approved"
        log.info("%s/%s: request %d %s (%s)", *pending.key, request, verb, answer)
        return {"platform": pending.key[0], "credential_type": pending.key[1], "answer": verb}
