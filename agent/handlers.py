"""One handler per op of ``client.protocol.OPS``; the table ``HANDLERS`` routes them.

A handler gets the agent, the checked arguments and the peer, turns the wire
arguments into a typed call of ``agent.state.Agent``, and returns a result (the
fast path: no task, no await) or an awaitable. It raises the typed errors;
``agent.transport.connection`` turns them into replies.
"""

from __future__ import annotations

import inspect
import math
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import agent
from agent import audit
from agent.keys import passphrase
from agent.state import KEEP, Agent, Key
from agent.transport import Peer
from agent.transport.connection import PLAIN_RESULTS
from client import errors, protocol
from client.validation import DEFAULT_TYPE, check_credential, check_name

__all__ = ["HANDLERS", "make_dispatch"]

Args = Mapping[str, Any]
Handler = Callable[[Agent, Args, Peer], Any]


def _key(args: Args) -> Key:
    return (args["platform"], args.get("credential_type", DEFAULT_TYPE))


def op_hello(a: Agent, args: Args, peer: Peer) -> Any:
    return {"protocol": protocol.PROTOCOL_VERSION, "agent": agent.__version__, "ops": sorted(protocol.OPS)}


def op_status(a: Agent, args: Args, peer: Peer) -> Any:
    options = a.options
    idle_left, unlocked_left = (None, None) if a.locked else a.autolock.left()
    failures, delay = passphrase.failures_of(a.meta)
    return {
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
        "credentials": len(a.entries),
        "vault_read_only": a.store.read_only,  # why writes fail, or None
        "uptime_s": round(time.monotonic() - a.started, 3),
        "idle_timeout": options.idle_timeout,
        "max_unlocked": options.max_unlocked,
        "idle_left_s": idle_left,
        "unlocked_left_s": unlocked_left,
        "hardening": a.hardening,
        "loop": a.loop_name,
        # what a wrong passphrase costs now, as the agent applies it (tests assert on this, not the clock)
        "unlock_failures": failures,
        "unlock_delay_s": delay,
        "unlocks_waiting": a.unlocks_waiting,  # passphrase attempts running or waiting their turn
    }


def op_stop(a: Agent, args: Args, peer: Peer) -> Any:
    a.on_stop()
    return {"stopping": True}


def op_init(a: Agent, args: Args, peer: Peer) -> Any:
    return a.init(args.get("key_source"), args.get("passphrase"))


def op_unlock(a: Agent, args: Args, peer: Peer) -> Any:
    return a.unlock(args.get("passphrase"))


def op_lock(a: Agent, args: Args, peer: Peer) -> Any:
    a.lock(explicit=True, reason="request")
    return None


def _write(a: Agent, args: Args, *, must_exist: bool) -> Any:
    return a.write(_key(args), args["value"], metadata=args.get("metadata"), expires_at=args.get("expires_at", KEEP),
                   validate=args.get("validate", True), must_exist=must_exist)


def op_store(a: Agent, args: Args, peer: Peer) -> Any:
    return _write(a, args, must_exist=False)


def op_update(a: Agent, args: Args, peer: Peer) -> Any:
    return _write(a, args, must_exist=True)


def op_get(a: Agent, args: Args, peer: Peer) -> Any:
    key = _key(args)
    if a.locked:
        return _get_locked(a, key, args.get("expiry", False))
    value = a.get_cached(key)
    if args.get("expiry"):
        return _with_expiry(a, key, value)
    return value


def _with_expiry(a: Agent, key: Key, value: str) -> Any:
    # the bare value when there is no expiry: the common case stays the small reply
    expires = a.entries[key].expires
    return value if expires is None else {"value": value, "expires_at": expires}


async def _get_locked(a: Agent, key: Key, expiry: bool) -> Any:
    value = await a.get(key)
    return _with_expiry(a, key, value) if expiry else value


def op_delete(a: Agent, args: Args, peer: Peer) -> Any:
    return a.delete(_key(args))


def op_list(a: Agent, args: Args, peer: Peer) -> Any:
    return a.list(args.get("offset", 0), args.get("limit"))


def op_metadata(a: Agent, args: Args, peer: Peer) -> Any:
    return a.metadata(_key(args))


def op_validate(a: Agent, args: Args, peer: Peer) -> Any:
    check_name(args["platform"])
    try:
        check_credential(args["platform"], args["value"])
    except errors.InvalidCredential as e:
        return {"valid": False, "reason": e.message}
    return {"valid": True, "reason": None}


MAX_AUDIT_ROWS = 10_000  # per request; a reply is further cut to fit one frame


async def op_audit(a: Agent, args: Args, peer: Peer) -> Any:
    limit, since = args.get("limit", 1000), args.get("since")
    if not 1 <= limit <= MAX_AUDIT_ROWS:
        raise errors.BadRequest(f"limit must be between 1 and {MAX_AUDIT_ROWS}")
    if since is not None and not (math.isfinite(since) and 0 <= since < 2**53):
        raise errors.BadRequest("since must be a finite, non-negative timestamp")
    rows = await a.audit.read(since, args.get("platform"), limit)
    fields = ("time", "op", "platform", "credential_type", "pid", "uid", "exe", "result", "count", "last_time")
    result = [dict(zip(fields, r, strict=True)) for r in rows]
    while result and not protocol.fits_in_frame(result):
        result = result[len(result) // 2:]  # keep the newest rows (the list is oldest first)
    return result


def op_rotate_key(a: Agent, args: Args, peer: Peer) -> Any:
    return a.rotate_key(args.get("passphrase"), args.get("new_passphrase"))


HANDLERS: Mapping[str, Handler] = {
    "hello": op_hello,
    "status": op_status,
    "stop": op_stop,
    "init": op_init,
    "unlock": op_unlock,
    "lock": op_lock,
    "store": op_store,
    "update": op_update,
    "get": op_get,
    "delete": op_delete,
    "list": op_list,
    "metadata": op_metadata,
    "validate": op_validate,
    "audit": op_audit,
    "rotate_key": op_rotate_key,
}


def _record_failure(a: Agent, request: protocol.Request, peer: Peer, e: Exception) -> None:
    code = e.code if isinstance(e, errors.AgentError) else errors.Internal.code
    a.audit.record(request.op, request.args, peer, code)


async def _audited(a: Agent, request: protocol.Request, peer: Peer, pending: Awaitable[Any]) -> Any:
    try:
        result = await pending
    except Exception as e:
        _record_failure(a, request, peer, e)
        raise
    a.audit.record(request.op, request.args, peer, "ok")
    return result


def make_dispatch(a: Agent) -> Callable[[protocol.Request, Peer], Any]:
    handlers = HANDLERS
    audited = audit.AUDITED if a.audit.enabled else frozenset()

    def dispatch(request: protocol.Request, peer: Peer) -> Any:
        if request.op not in audited:
            return handlers[request.op](a, request.args, peer)
        # the record is an append to a list; the storage thread writes it later
        try:
            result = handlers[request.op](a, request.args, peer)
        except Exception as e:
            _record_failure(a, request, peer, e)
            raise
        if type(result) not in PLAIN_RESULTS and inspect.isawaitable(result):
            return _audited(a, request, peer, result)
        a.audit.record(request.op, request.args, peer, "ok")
        return result

    return dispatch
