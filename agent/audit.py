"""The access audit log: who asked for which credential, when, and what came of it.

Rules of this module:
- a row holds the time, op, platform, credential type, the caller's pid, uid and
  executable (as the kernel reported them when it connected), a Python caller's
  script or module (``agent.transport.callers``), the command ``agent exec``/``run``
  fetched a credential for (the ``command`` of its ``get``: a name the CLI sends, not
  argv) and the result code; never a value, a passphrase or metadata;
- recording is a dict update on the event loop: the hot ``get`` path does no I/O.
  Identical events in one batch (same caller, op, name, result: a connector calling
  ``get`` in a loop) become one row with a count and first/last times, and so do one
  caller's failed lookups whatever names they tried (``SEVERAL``, ``*``, names the
  row when there were more than one), so neither a busy loop nor a flood of guesses
  costs a row each or pushes the rest of the history out;
- pid, uid and executable are what the kernel says; a Python caller's script and the
  ``command`` are what the caller says of itself (argv can be rewritten in place, a
  working directory changed, a field sent): ``agent audit`` shows them as claims;
- rows are written in batches on the storage thread, ``FLUSH_INTERVAL`` after the
  first pending one, when ``MAX_PENDING`` pile up, before ``audit`` reads, and at
  shutdown. A ``kill -9`` loses at most the last interval's rows;
- the table is bounded: each batch prunes it to the newest ``keep`` rows in the
  same transaction.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections.abc import Mapping
from typing import Any, Final

from agent.stores import AuditRow, Store
from agent.transport import Peer
from client import config, errors
from client.names import canonical_platform
from client.validation import DEFAULT_TYPE, check_name

__all__ = ["AUDITED", "AuditLog", "DEFAULT_KEEP", "FLUSH_INTERVAL", "MAX_PENDING", "SEVERAL"]

log = logging.getLogger("agent.audit")

# Ops that touch a credential or the key that guards them. `list`, `status` and
# `hello` reveal names only and are not recorded (they would drown the rest).
AUDITED: Final = frozenset(
    {
        "get",
        "store",
        "update",
        "delete",
        "rename",
        "metadata",
        "unlock",
        "lock",
        "init",
        "rotate_key",
        "rekey",
        "recovery_code",
        "recover",
        "encrypt",
        "decrypt",
        "remote_login",
        "history_value",
        "history_restore",
        "approve",
        "approval_pin",
        "grant",
    }
)
# recorded under the name they were sent (rename: the old one)
_NAMED: Final = frozenset(
    {"get", "store", "update", "delete", "rename", "metadata", "history_value", "history_restore"}
)
# ~100 bytes a row: 10 000 rows is ~1 MB of vault, weeks of a busy user's history
DEFAULT_KEEP: Final[int] = config.KEYS["audit_keep"].default
# how long a row may wait in memory; a crash loses at most this much history
FLUSH_INTERVAL: Final = 1.0
MAX_PENDING: Final = 1_000
# distinct credentials one caller's op has a row of, per batch: past this, its further
# successes fold into one row of SEVERAL names (a count), as its failures always do, so a
# program reading thousands of keys a second (an export) costs a few rows a second, not one
# per key, and the audit's cost stays flat
NAMED_PER_CALLER: Final = 64
_FOLDED: Final = frozenset({"get", "metadata", "history_value"})  # reads; every change keeps its row
MAX_COMMAND: Final = 255  # a file name
# the name of a row that counts failed lookups of more than one name
SEVERAL: Final = "*"
_FAILED: Final = object()  # the names of a failed lookup, in a pending row's key


def _command(value: Any) -> str | None:
    # the name of a program; anything else is not stored, as for names
    if value is None:
        return None
    if isinstance(value, str) and 0 < len(value) <= MAX_COMMAND and value.isprintable():
        return value
    return "<invalid>"


def _name(value: Any) -> str | None:
    # a malformed name is not stored: a confused caller may have put a secret there
    if value is None:
        return None
    try:
        return check_name(value)
    except errors.BadRequest:
        return "<invalid>"


class AuditLog:
    def __init__(self, store: Store, executor: concurrent.futures.Executor, keep: int = DEFAULT_KEEP) -> None:
        self.store = store
        self.executor = executor
        self.keep = keep
        # (op, platform, type, pid, uid, exe, result, caller, command) -> [first ts, last ts, count,
        # (platform, type)], in arrival order; a failed lookup's key has _FAILED for its names
        self.pending: dict[tuple[Any, ...], list[Any]] = {}
        # (op, pid, uid, exe, result, caller, command) -> distinct names with a row in this batch
        self._named: dict[tuple[Any, ...], int] = {}
        self._timer: asyncio.TimerHandle | None = None

    @property
    def enabled(self) -> bool:
        return self.keep > 0

    def record(self, op: str, args: Mapping[str, Any], peer: Peer, result: str) -> None:
        if self.keep <= 0:
            return
        platform = ctype = command = None
        if op in _NAMED:
            # as the handler named it (``HF`` was ``huggingface`` there)
            platform, ctype = args.get("platform"), args.get("credential_type", DEFAULT_TYPE)
            platform = platform if platform is None else canonical_platform(platform)
            if result != "ok":  # a success means the names were checked already
                platform, ctype = _name(platform), _name(ctype)
            if op == "get":
                command = _command(args.get("command"))
        now = time.time()
        names = (platform, ctype)
        if op in _NAMED and result != "ok":
            # failed lookups of one caller are one row a batch, whatever names it tried: a
            # flood of guesses counts up one row instead of pushing the history out
            platform = ctype = _FAILED
        key = (op, platform, ctype, peer.pid, peer.uid, peer.exe, result, peer.caller, command)
        if op in _FOLDED and result == "ok" and key not in self.pending:
            caller = (op, peer.pid, peer.uid, peer.exe, result, peer.caller, command)
            count = self._named.get(caller, 0)
            if count >= NAMED_PER_CALLER:
                key = (op, SEVERAL, SEVERAL, *caller[1:5], caller[5], command)
                names = (SEVERAL, SEVERAL)
            else:
                self._named[caller] = count + 1
        seen = self.pending.get(key)
        if seen is not None:
            seen[1] = now
            seen[2] += 1
            if seen[3] != names:
                seen[3] = (SEVERAL, SEVERAL)
            return
        self.pending[key] = [now, now, 1, names]
        if len(self.pending) >= MAX_PENDING:
            self.flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(FLUSH_INTERVAL, self.flush)

    def flush(self) -> concurrent.futures.Future[None] | None:
        """Hand the pending rows to the storage thread (whose queue keeps them in order)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self.pending:
            return None
        rows: list[AuditRow] = [
            (first, key[0], *names, *key[3:7], count, last, *key[7:])
            for key, (first, last, count, names) in self.pending.items()
        ]
        self.pending = {}
        self._named = {}
        fut = self.executor.submit(self.store.add_audit, rows, self.keep)
        fut.add_done_callback(_report)
        return fut

    async def read(
        self, since: float | None, platform: str | None, limit: int, by: str | None = None
    ) -> list[AuditRow]:
        """The newest ``limit`` rows matching the filters, oldest first, pending ones included."""
        self.flush()  # the storage thread's queue puts this read after the pending rows
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, self.store.audit, since, platform, limit, by)


def _report(fut: concurrent.futures.Future[None]) -> None:
    err = fut.exception()
    if err is not None:
        log.error("could not write to the audit log", exc_info=err)
