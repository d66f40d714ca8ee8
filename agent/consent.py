"""Reads under the config file's ``[access]`` rules and scoped grants: what a read gets,
the wait for approval, and the ops ``approvals``, ``approve``, ``approval_pin`` and ``grant``.

``agent.handlers`` asks ``check`` before a value leaves the agent (``get``,
``history_value``) when there are rules or grants; a read that is not simply allowed goes
through ``approved_then``: denied with what denies it, or held until the user approves
it (``agent.approvals``). Inside a granted process tree the granted keys are read
without a question and any other needs approval; a rule's ``deny`` holds everywhere.
"""

from __future__ import annotations

import inspect
import logging
import math
import os
import stat
import sys
from collections.abc import Callable, Mapping
from typing import Any

from agent import access, approvals, pinentry
from agent.state import Agent, Key
from agent.transport import Peer
from agent.transport.callers import parent_of, start_time
from client import errors
from client.names import canonical_platform, canonical_type
from client.validation import check_key

__all__ = [
    "MAX_GRANTED",
    "check",
    "mark",
    "approved_then",
    "rename_guarded",
    "op_approvals",
    "op_approve",
    "op_approval_pin",
    "op_approve_here",
    "op_grant",
]

MAX_GRANTED = 256  # keys in one grant
MAX_SHOWN = 200  # characters of a caller's path shown in a pinentry

log = logging.getLogger("agent.approvals")

Args = Mapping[str, Any]


def mark(a: Agent, entries: list[dict[str, Any]]) -> None:
    """Add to each listed entry the rule that governs it (``access``: pattern, rule, only)."""
    for entry in entries:
        rule = access.rule_for(a.options.access, (entry["platform"], entry["credential_type"]))
        if rule is not None:
            entry["access"] = {"pattern": rule.pattern, "rule": rule.action, "only": list(rule.only)}


def check(a: Agent, key: Key, peer: Peer) -> tuple[str, str] | None:
    """None when ``peer`` reads ``key`` as always; else ("deny" or "confirm", why)."""
    if peer.started is not None and start_time(peer.pid) != peer.started:
        # the process that connected has exited, and its pid may name another one now: a
        # grant or an approval of that pid is not this connection's
        return "deny", "the process that opened this connection has exited"
    action, rule = access.decide(a.options.access, key, peer) if a.options.access else ("allow", None)
    if action == "deny" and rule is not None:
        return "deny", f"{rule.names()} in the config file"
    tree = a.approvals.tree_of(peer)
    if tree is not None:
        if key in tree.keys:
            return None
        return "confirm", f"not granted to the process tree of pid {tree.root[0]}"
    if action == "allow" or rule is None:
        return None
    return action, rule.names()


async def approved_then(a: Agent, key: Key, peer: Peer, action: str, why: str, read: Callable[[], Any]) -> Any:
    """``read()``'s result once ``peer`` may read ``key``; else ``Denied``, saying why."""
    await _approved(a, key, peer, action, why)
    result = read()
    return await result if inspect.isawaitable(result) else result


async def _approved(a: Agent, key: Key, peer: Peer, action: str, why: str) -> None:
    if action == "deny":
        raise errors.Denied(f"{key[0]}/{key[1]} may not be read by {access.describe_caller(peer)}: {why}")
    check_key(*key)
    prompt = None
    if a.options.pinentry is not None and (a.approvals.prompt_tty or os.environ.get("DISPLAY")):

        async def prompt(request: int) -> None:
            await _pinentry(a, request, key, peer, why)

    await a.approvals.ask(key, peer, why, prompt)


async def _pinentry(a: Agent, request: int, key: Key, peer: Peer, why: str) -> None:
    """Ask through the configured pinentry; the secret typed must prove presence. Three
    tries; Cancel, or no answer, denies. A pinentry that cannot run leaves `agent approve`."""
    program = str(a.options.pinentry)
    # what the user must trust comes first and cannot be pushed out: the key and the pid;
    # the caller's own words (its path, argv) last, escaped and cut short
    caller = "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in access.describe_caller(peer))
    caller = caller if len(caller) <= MAX_SHOWN else caller[: MAX_SHOWN - 3] + "..."
    description = (
        f"Read {key[0]}/{key[1]} for process {peer.pid}? ({why})\n"
        "Enter the vault's passphrase, or its approval PIN, to allow it; Cancel denies.\n"
        f"The process: {caller}"
    )
    error = None
    for _ in range(3):
        try:
            typed = await pinentry.ask(
                program,
                description,
                "Passphrase or PIN:",
                tty=a.approvals.prompt_tty,
                error=error,
                timeout=a.approvals.timeout,
            )
        except (OSError, ConnectionError) as e:
            log.warning("the pinentry %s could not ask (%s); `agent approve` still can", program, type(e).__name__)
            return
        if request not in a.approvals.pending:
            return  # answered elsewhere meanwhile
        if typed is None:
            a.approvals.answer(request, "denied")
            return
        try:
            await a.prove_presence(typed)
        except (errors.BadPassphrase, errors.IntegrityError):
            error = "That is not the vault's passphrase or approval PIN."
            continue
        if request in a.approvals.pending:
            a.approvals.answer(request, "process")
        return
    if request in a.approvals.pending:
        a.approvals.answer(request, "denied")


async def op_approve_here(a: Agent, args: Args, peer: Peer) -> Any:
    """Name the terminal where the pinentry asks: the caller's controlling terminal, no other
    (a process must not send the question to a pty of its own)."""
    tty = args["tty"]
    if sys.platform == "win32":
        raise errors.BadRequest("a pinentry terminal is for Linux and macOS; answer with `agent approve`")
    try:
        st = os.stat(tty)
    except (OSError, ValueError):  # ValueError: a NUL in the path
        raise errors.BadRequest("that is not a terminal this agent can open") from None
    if not tty.startswith("/dev/") or not stat.S_ISCHR(st.st_mode) or st.st_uid != os.getuid():
        raise errors.BadRequest(f"{tty} is not a terminal of this user")
    info = parent_of(peer.pid) if peer.pid is not None else None
    if info is None or info[2] != st.st_rdev:
        raise errors.BadRequest(f"{tty} is not the controlling terminal of the process asking")
    a.approvals.prompt_tty = tty
    return {"tty": tty, "pinentry": None if a.options.pinentry is None else str(a.options.pinentry)}


async def rename_guarded(a: Agent, old: Key, new: Key, peer: Peer, rename: Callable[[], Any]) -> Any:
    """``rename()`` once ``peer`` may read ``old`` (as a ``get`` would need) and ``new`` is
    under the same rule: else a rename, then a ``get`` of the new name, would read around it."""
    verdict = check(a, old, peer)
    if verdict is not None:
        await _approved(a, old, peer, *verdict)
    if a.options.access:
        before, after = access.rule_for(a.options.access, old), access.rule_for(a.options.access, new)
        if before is not None and before is not after:
            raise errors.Denied(
                f"moving {old[0]}/{old[1]} to {new[0]}/{new[1]} would take it out from under {before.names()}: "
                "name it so that the same rule matches, or change the rule in the config file"
            )
    result = rename()
    return await result if inspect.isawaitable(result) else result


async def op_grant(a: Agent, args: Args, peer: Peer) -> Any:
    """Grant ``keys`` to the caller's own process tree: each one the caller may read itself
    (a rule's confirmation is asked for now, once), so a grant never widens access."""
    raw = args["keys"]
    if not 0 < len(raw) <= MAX_GRANTED or not all(_is_name(k) for k in raw):
        raise errors.BadRequest(f"keys must be 1 to {MAX_GRANTED} [platform, credential_type] pairs")
    keys = [check_key(canonical_platform(p), canonical_type(t)) for p, t in raw]
    for key in keys:
        verdict = check(a, key, peer)
        if verdict is not None:
            await _approved(a, key, peer, *verdict)
    a.approvals.add_tree(peer, frozenset(keys))
    return {"granted": [list(k) for k in keys], "pid": peer.pid}


def _is_name(item: Any) -> bool:
    return isinstance(item, list) and len(item) == 2 and all(isinstance(n, str) for n in item)


def op_approvals(a: Agent, args: Args, peer: Peer) -> Any:
    return a.approvals.listing()


async def op_approve(a: Agent, args: Args, peer: Peer) -> Any:
    remember, for_s = args.get("remember", "process"), args.get("for_s")
    if remember not in approvals.REMEMBER:
        raise errors.BadRequest(f"remember must be one of {', '.join(approvals.REMEMBER)}")
    if for_s is not None and not (math.isfinite(for_s) and 0 < for_s <= 86400 * 30):
        raise errors.BadRequest("for_s must be a number of seconds above 0 and at most 30 days")
    request = args["request"]
    if request not in a.approvals.pending:  # checked first: no secret is tried against nothing
        raise errors.NotFound(f"no read waits for approval as request {request} (it was answered or timed out)")
    if not args["allow"]:  # anyone may say no: a denial takes nothing from anybody
        return a.approvals.answer(request, "denied")
    if peer.pid in a.approvals.proving:
        raise errors.Busy("this process has an approval attempt running already")
    a.approvals.proving.add(peer.pid)
    try:
        await a.prove_presence(args.get("secret"))
    finally:
        a.approvals.proving.discard(peer.pid)
    return a.approvals.answer(request, remember if for_s is None else str(float(for_s)))


async def op_approval_pin(a: Agent, args: Args, peer: Peer) -> Any:
    await a.set_approval_pin(args["pin"], args.get("current"))
    return None
