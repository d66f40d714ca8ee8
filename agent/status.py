"""What ``agent status`` reports: the agent's state, settings, hardening and counters, one map.

Rules of this module: it reads the agent's state and changes nothing; while the agent
holds no names (locked, before a listing asks) the vault counts the credentials, so
the report is then an awaitable.
"""

from __future__ import annotations

import os
import time
from typing import Any

import agent
from agent.keys import passphrase
from agent.remotes import team
from agent.state import Agent
from client import protocol

__all__ = ["report"]


def report(a: Agent) -> Any:
    """The status map; an awaitable of it while the agent holds no names (the vault counts them)."""
    options = a.options
    idle_left, unlocked_left = (None, None) if a.locked else a.autolock.left()
    failures, delay = passphrase.failures_of(a.meta)
    shown = {
        "version": agent.__version__,
        "protocol": protocol.PROTOCOL_VERSION,
        "pid": os.getpid(),
        "socket": str(options.socket),
        "socket_activated": options.socket_activated,
        "vault": str(options.vault),
        "initialized": a.initialized,
        "locked": a.locked,
        "locked_by_user": a.locked_by_user,
        "key_source": a.key_source,
        "credentials": len(a.entries) if a.names_held else None,  # else counted below
        # credentials whose entry the agent holds in memory: none while locked, until a listing
        "entries_held": len(a.entries),
        # times the agent sorted every name for a listing (once per unlock and change of
        # many, plus the team names once per listing; never once per page)
        "listing_sorts": a.entries.sorts
        + (remotes.listing_sorts if isinstance(remotes := a.remotes, team.Remotes) else 0),
        # group commit: transactions of stores and updates, the writes they acknowledged, the
        # most one held (writes that arrive while one commits share the next)
        "write_transactions": a.write_queue.transactions,
        "writes_committed": a.write_queue.writes,
        "largest_write_group": a.write_queue.largest,
        "vault_read_only": a.store.read_only,  # why writes fail, or None
        "vault_replaced": a.store.replaced,  # the vault file deleted, moved or replaced under the agent, or None
        "uptime_s": round(time.monotonic() - a.started, 3),
        "idle_timeout": options.idle_timeout,
        "max_unlocked": options.max_unlocked,
        "idle_left_s": idle_left,
        "unlocked_left_s": unlocked_left,
        # when the agent locks itself: the nearest of the timers and an unlock's own bound
        "locks_in_s": None if a.locked else a.autolock.locks_in(),
        "unlock_bound_left_s": None if a.locked else a.autolock.bound_left(),
        "hardening": a.hardening,
        "loop": a.loop_name,
        # what a wrong passphrase costs now, as the agent applies it (tests assert on this, not the clock)
        "unlock_failures": failures,
        "unlock_delay_s": delay,
        "unlocks_waiting": a.unlocks_waiting,  # passphrase attempts running or waiting their turn
        "recovery_code": a.has_recovery_code,  # whether one was made (and not dropped by a rotation)
        "recover_failures": a.recover_failures,  # wrong recovery codes in a row
        "recover_delay_s": passphrase.delay_after(a.recover_failures),
        "access_rules": len(options.access),  # [access] tables in force
        "approvals_pending": len(a.approvals.pending),  # reads waiting for `agent approve`
        "approval_pin": a.has_approval_pin,  # a keystore vault's proof of presence is set
        "approval_pin_failures": a.approval_pin_failures,  # wrong PINs in a row (kept in the vault)
    }
    return shown if a.names_held else _counted(a, shown)


async def _counted(a: Agent, status: dict[str, Any]) -> dict[str, Any]:
    status["credentials"] = await a.count()
    return status
