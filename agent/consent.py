"""Reads under the config file's ``[access]`` rules: the wait for approval, and the approval ops.

``agent.handlers`` asks ``agent.access.decide`` before a value leaves the agent (``get``,
``history_value``); a read that is not simply allowed goes through ``approved_then``
here: denied with the rule's name, or held until the user approves it
(``agent.approvals``). The ops ``approvals``, ``approve`` and ``approval_pin`` are the
user's side of it (``agent approve``).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping
from typing import Any

from agent import access, approvals
from agent.state import Agent, Key
from agent.transport import Peer
from client import errors
from client.validation import check_key

__all__ = ["approved_then", "op_approvals", "op_approve", "op_approval_pin"]

Args = Mapping[str, Any]


async def approved_then(
    a: Agent, key: Key, peer: Peer, action: str, rule: access.Rule | None, read: Callable[[], Any]
) -> Any:
    """``read()``'s result once a rule lets ``peer`` read ``key``; else ``Denied``, naming the rule."""
    assert rule is not None
    if action == "deny":
        raise errors.Denied(
            f"{key[0]}/{key[1]} may not be read by {access.describe_caller(peer)}: {rule.names()} in the config file"
        )
    check_key(*key)
    await a.approvals.ask(key, peer, rule)
    result = read()
    return await result if inspect.isawaitable(result) else result


def op_approvals(a: Agent, args: Args, peer: Peer) -> Any:
    return a.approvals.listing()


async def op_approve(a: Agent, args: Args, peer: Peer) -> Any:
    remember, for_s = args.get("remember", "process"), args.get("for_s")
    if remember not in approvals.REMEMBER:
        raise errors.BadRequest(f"remember must be one of {', '.join(approvals.REMEMBER)}")
    if for_s is not None and not (math.isfinite(for_s) and 0 < for_s <= 86400 * 30):
        raise errors.BadRequest("for_s must be a number of seconds above 0 and at most 30 days")
    if not args["allow"]:  # anyone may say no: a denial takes nothing from anybody
        return a.approvals.answer(args["request"], "denied")
    await a.prove_presence(args.get("secret"))
    return a.approvals.answer(args["request"], remember if for_s is None else str(float(for_s)))


async def op_approval_pin(a: Agent, args: Args, peer: Peer) -> Any:
    await a.set_approval_pin(args["pin"], args.get("current"))
    return None
