"""One handler per op of ``client.protocol.OPS``; the table ``HANDLERS`` routes them.

A handler gets the agent, the checked arguments and the peer, and returns a
result (the fast path: no task, no await) or an awaitable. It raises the typed
errors; ``agent.server`` turns them into replies.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import agent
from agent.core import Agent, Key
from agent.server import Peer
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
    return {"version": agent.__version__, "protocol": protocol.PROTOCOL_VERSION, **a.status()}


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


def op_store(a: Agent, args: Args, peer: Peer) -> Any:
    return a.write(dict(args), must_exist=False)


def op_update(a: Agent, args: Args, peer: Peer) -> Any:
    return a.write(dict(args), must_exist=True)


def op_get(a: Agent, args: Args, peer: Peer) -> Any:
    if a.locked:
        return a.get(_key(args))
    return a.get_cached(_key(args))


def op_delete(a: Agent, args: Args, peer: Peer) -> Any:
    return a.delete(_key(args))


def op_list(a: Agent, args: Args, peer: Peer) -> Any:
    return a.list()


def op_metadata(a: Agent, args: Args, peer: Peer) -> Any:
    return a.metadata(_key(args))


def op_validate(a: Agent, args: Args, peer: Peer) -> Any:
    check_name(args["platform"])
    try:
        check_credential(args["platform"], args["value"])
    except errors.InvalidCredential as e:
        return {"valid": False, "reason": e.message}
    return {"valid": True, "reason": None}


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
}


def make_dispatch(a: Agent) -> Callable[[protocol.Request, Peer], Any]:
    handlers = HANDLERS

    def dispatch(request: protocol.Request, peer: Peer) -> Any:
        return handlers[request.op](a, request.args, peer)

    return dispatch
