"""One handler per op of ``client.protocol.OPS``; the table ``HANDLERS`` routes them.

A handler gets the agent, the arguments ``client.protocol`` has checked against the
op's table and the peer, turns them into a typed call (of ``agent.state.Agent``, or of
the team vaults, ``agent.remotes``, for a request that names a remote or a name the
local vault does not hold), and returns a result (the fast path: no task, no await)
or an awaitable. It raises the typed errors; ``agent.transport.connection`` turns
them into replies, in one place. ``make_dispatch`` adds the audit record of the ops
``agent.audit.AUDITED`` names, for success and failure alike.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import agent
from agent import audit, autolock, consent, status
from agent.remotes import listing, team, writes
from agent.state import KEEP, Agent, Key, check_page
from agent.stores import Who
from agent.transport import Peer
from agent.transport.connection import PLAIN_RESULTS
from client import errors, protocol
from client.names import canonical_platform, canonical_type
from client.validation import DEFAULT_TYPE, check_credential, check_key, check_name

__all__ = ["HANDLERS", "make_dispatch"]

Args = Mapping[str, Any]
Handler = Callable[[Agent, Args, Peer], Any]


def _key(args: Args) -> Key:
    # names are canonical from here on: the vault holds no other (client.names)
    return (canonical_platform(args["platform"]), canonical_type(args.get("credential_type", DEFAULT_TYPE)))


def op_hello(a: Agent, args: Args, peer: Peer) -> Any:
    return {"protocol": protocol.PROTOCOL_VERSION, "agent": agent.__version__, "ops": sorted(protocol.OPS)}


def op_status(a: Agent, args: Args, peer: Peer) -> Any:
    return status.report(a)


def op_stop(a: Agent, args: Args, peer: Peer) -> Any:
    a.on_stop()
    return {"stopping": True}


def op_init(a: Agent, args: Args, peer: Peer) -> Any:
    return a.init(args.get("key_source"), args.get("passphrase"), args.get("recovery_code", False))


def op_unlock(a: Agent, args: Args, peer: Peer) -> Any:
    lock_after = args.get("lock_after")
    if lock_after is None and not a.rekey_unfinished:
        return a.unlock(args.get("passphrase"))
    if lock_after is not None and not (math.isfinite(lock_after) and 0 < lock_after <= autolock.MAX_BOUND):
        raise errors.BadRequest(f"lock_after must be a number of seconds above 0 and at most {autolock.MAX_BOUND:.0f}")
    return _unlock_then(a, args.get("passphrase"), lock_after)


async def _unlock_then(a: Agent, passphrase: str | None, lock_after: float | None) -> None:
    await a.unlock(passphrase)
    await a.finish_rekey()  # what a switch of key source that crashed left of the old one
    if lock_after is not None and not a.locked:  # a lock that won meanwhile holds
        a.autolock.bound(float(lock_after))


def op_lock(a: Agent, args: Args, peer: Peer) -> Any:
    a.lock(explicit=True, reason="request")
    return None


def _team(a: Agent) -> team.Remotes | None:
    """The agent's team vaults, if its config names any."""
    remotes = a.remotes
    return remotes if isinstance(remotes, team.Remotes) and remotes.active else None


def _named(a: Agent, args: Args) -> team.Remotes:
    remotes = _team(a)
    if remotes is None:
        raise errors.BadRequest(
            f"no remote named {args.get('remote', '')!r}: the config file named none ([remote.NAME] tables) when "
            "this agent started; after adding one, restart the agent (`agent stop`, then `agent start`)"
        )
    return remotes


def _write(a: Agent, args: Args, peer: Peer, *, must_exist: bool) -> Any:
    if "remote" in args:
        key = check_key(*_key(args))
        if len(args["value"]) > protocol.MAX_VALUE:
            raise errors.BadRequest(f"the value is longer than {protocol.MAX_VALUE} characters")
        if args.get("validate", True):
            check_credential(key[0], args["value"], key[1])
        return writes.write(
            _named(a, args),
            args["remote"],
            key,
            args["value"],
            args.get("metadata"),
            args.get("expires_at", KEEP),
            must_exist,
        )
    return a.write(
        _key(args),
        args["value"],
        metadata=args.get("metadata"),
        expires_at=args.get("expires_at", KEEP),
        validate=args.get("validate", True),
        must_exist=must_exist,
        keep=args.get("keep", False),
        merge=args.get("merge_metadata", False),
        by=_by(peer),
    )


def _by(peer: Peer) -> Who:
    """Who replaced a value, for its history: the executable the kernel names, and the
    script or module the caller says it runs (as the audit log keeps them)."""
    return peer.exe, peer.caller


def op_store(a: Agent, args: Args, peer: Peer) -> Any:
    return _write(a, args, peer, must_exist=False)


def op_update(a: Agent, args: Args, peer: Peer) -> Any:
    return _write(a, args, peer, must_exist=True)


def op_get(a: Agent, args: Args, peer: Peer) -> Any:
    key = _key(args)
    if a.options.access or a.approvals.trees:  # no rules, no grants: the fast path, as always
        verdict = consent.check(a, key, peer)
        if verdict is not None:
            return consent.approved_then(a, key, peer, *verdict, lambda: _get(a, key, args))
    return _get(a, key, args)


def _get(a: Agent, key: Key, args: Args) -> Any:
    if a.locked:
        return _get_locked(a, key, args.get("expiry", False))
    return _resolve(a, key, args)


def _resolve(a: Agent, key: Key, args: Args) -> Any:
    try:
        value = a.get_cached(key)
    except errors.NotFound:
        remotes = _team(a)
        if remotes is None or key in a.entries:
            raise
        return remotes.get(key, args.get("expiry", False))  # local first, then the remotes in order
    if args.get("expiry"):
        return _with_expiry(a, key, value)
    return value


def _with_expiry(a: Agent, key: Key, value: str) -> Any:
    # the bare value when there is no expiry: the common case stays the small reply
    expires = a.entries[key].expires
    return value if expires is None else {"value": value, "expires_at": expires}


async def _get_locked(a: Agent, key: Key, expiry: bool) -> Any:
    await a.storage()  # a keystore vault unlocks itself; else Locked
    result = _resolve(a, key, {"expiry": expiry})
    return await result if inspect.isawaitable(result) else result


def op_delete(a: Agent, args: Args, peer: Peer) -> Any:
    if "remote" in args:
        key = check_key(*_key(args))
        return writes.delete(_named(a, args), args["remote"], key)
    return a.delete(_key(args), _by(peer))


def op_rename(a: Agent, args: Args, peer: Peer) -> Any:
    # the new name is made canonical as every other name is: `HF` is huggingface's row
    new = (canonical_platform(args["new_platform"]), canonical_type(args.get("new_credential_type", DEFAULT_TYPE)))
    old, replace = _key(args), args.get("replace", False)
    if a.options.access or a.approvals.trees:  # a rename must not carry a key out from under its rule
        return consent.rename_guarded(a, old, new, peer, lambda: a.rename(old, new, replace=replace, by=_by(peer)))
    return a.rename(old, new, replace=replace, by=_by(peer))


def op_list(a: Agent, args: Args, peer: Peer) -> Any:
    offset, limit = args.get("offset", 0), args.get("limit")
    after = check_page(offset, limit, args.get("after"))
    if not a.names_held:  # a locked agent reads its names when first asked
        return _list_when_held(a, offset, limit, after)
    return _page(a, offset, limit, after)


async def _list_when_held(a: Agent, offset: int, limit: int | None, after: Key | None) -> Any:
    await a.hold_names()
    return _page(a, offset, limit, after)


def _page(a: Agent, offset: int, limit: int | None, after: Key | None) -> Any:
    remotes = _team(a)
    if remotes is not None:  # local and team keys together, in name order
        entries = listing.page(remotes, a, offset, limit, after)
    else:
        entries = a.list(offset, limit, after)
        for entry in entries:
            entry["source"] = "local"
    if a.options.access:  # each entry's rule, as `agent ls` shows it
        consent.mark(a, entries)
    return entries


async def op_metadata(a: Agent, args: Args, peer: Peer) -> Any:
    key = _key(args)
    try:
        entry = {**await a.metadata(key), "source": "local"}
    except errors.NotFound:
        remotes = _team(a)
        if remotes is None or key in a.entries:
            raise
        found = remotes.get(key, False)  # a team key no copy of is held yet is read through first
        if inspect.isawaitable(found):
            await found
        entry = listing.describe(remotes, key)
    if a.options.access:
        consent.mark(a, [entry])
    return entry


def op_remote_login(a: Agent, args: Args, peer: Peer) -> Any:
    jwt = {k: args.get(k) for k in ("jwt", "jwt_role", "jwt_file")}
    return _named(a, args).login(args["remote"], args.get("token"), args.get("role_id"), args.get("secret_id"), **jwt)


def op_remote_status(a: Agent, args: Args, peer: Peer) -> Any:
    remotes = _team(a)
    return [] if remotes is None else listing.status(remotes)


def op_remote_sync(a: Agent, args: Args, peer: Peer) -> Any:
    remotes = _team(a)
    if remotes is None:
        if "remote" in args:
            _named(a, args)
        return []
    return _synced(remotes, args.get("remote"))


async def _synced(remotes: team.Remotes, name: str | None) -> Any:
    await remotes.sync(name)
    return listing.status(remotes)


def op_validate(a: Agent, args: Args, peer: Peer) -> Any:
    platform = check_name(canonical_platform(args["platform"]))
    try:
        check_credential(platform, args["value"])
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
    platform = args.get("platform")
    rows = await a.audit.read(since, None if platform is None else canonical_platform(platform), limit, args.get("by"))
    fields = (
        "time",
        "op",
        "platform",
        "credential_type",
        "pid",
        "uid",
        "exe",
        "result",
        "count",
        "last_time",
        "caller",
        "command",
    )
    result = [dict(zip(fields, r, strict=True)) for r in rows]
    while result and not protocol.fits_in_frame(result):
        result = result[len(result) // 2 :]  # keep the newest rows (the list is oldest first)
    return result


async def op_rotate_key(a: Agent, args: Args, peer: Peer) -> Any:
    result = await a.rotate_key(args.get("passphrase"), args.get("new_passphrase"))
    return {**result, "recovery_code_dropped": await a.drop_recovery_code()}


def op_rekey(a: Agent, args: Args, peer: Peer) -> Any:
    return a.rekey(args["key_source"], args.get("passphrase"), args.get("new_passphrase"))


def op_recovery_code(a: Agent, args: Args, peer: Peer) -> Any:
    return a.make_recovery_code(args.get("passphrase"))


def op_recover(a: Agent, args: Args, peer: Peer) -> Any:
    return a.recover(args["code"], args["key_source"], args.get("new_passphrase"))


def op_history(a: Agent, args: Args, peer: Peer) -> Any:
    key = None if "platform" not in args else _key(args)
    return a.history(key, args.get("limit"))


def op_history_value(a: Agent, args: Args, peer: Peer) -> Any:
    key = _key(args)
    if a.options.access or a.approvals.trees:  # a previous value is read as the current one is
        verdict = consent.check(a, key, peer)
        if verdict is not None:
            return consent.approved_then(a, key, peer, *verdict, lambda: a.history_value(key, args["version"]))
    return a.history_value(key, args["version"])


def op_history_restore(a: Agent, args: Args, peer: Peer) -> Any:
    return a.history_restore(_key(args), args["version"], _by(peer))


def op_encrypt(a: Agent, args: Args, peer: Peer) -> Any:
    return a.encrypt(args["data"])


def op_decrypt(a: Agent, args: Args, peer: Peer) -> Any:
    return a.decrypt(args["token"])


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
    "rename": op_rename,
    "list": op_list,
    "metadata": op_metadata,
    "validate": op_validate,
    "audit": op_audit,
    "rotate_key": op_rotate_key,
    "encrypt": op_encrypt,
    "decrypt": op_decrypt,
    "rekey": op_rekey,
    "recovery_code": op_recovery_code,
    "recover": op_recover,
    "remote_login": op_remote_login,
    "remote_status": op_remote_status,
    "remote_sync": op_remote_sync,
    "history": op_history,
    "history_value": op_history_value,
    "history_restore": op_history_restore,
    "approvals": consent.op_approvals,
    "approve": consent.op_approve,
    "approval_pin": consent.op_approval_pin,
    "grant": consent.op_grant,
    "approve_here": consent.op_approve_here,
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
