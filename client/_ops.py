"""The typed operations of both clients, written once (what an operation is, and how it
becomes a blocking or a coroutine method, is ``client._op``; request builders and reply
helpers are in ``client.messages``).

Rules of this module:
- no I/O: each operation is a ``@single`` request or a ``@plan`` of several (see
  ``client._op``). A request whose reply is an error raises it to the caller; the
  plan is abandoned;
- ``Operations`` holds every operation. On ``SyncOperations`` a single-request
  operation is the blocking method itself, costing what a hand-written one does
  (``get`` is the hot path of every connector); ``AsyncOperations`` has each
  operation as a coroutine method. The clients subclass them and supply only the
  transport: ``call`` and ``call_many``;
- what the operations keep of their client (the expiry policy, and the expired
  credentials already warned about) is set by ``Operations.__init__`` and read here only;
- adding an op: its ``OPS`` entry in ``client.vocabulary``, its agent handler, and
  one definition in ``Operations`` below; never a client by hand;
- no typing at run time (see ``client._op``).
"""

from __future__ import annotations

from client import errors
from client._op import Awaiting, Blocking, install, plan, single
from client.messages import (
    ListPages,
    credentials_of,
    expiry_policy,
    field_name,
    get_args,
    given,
    name_args,
    name_pair,
    reply_code,
    reply_map,
    reply_none,
    reply_reason,
    reply_rows,
    reply_text,
    reply_token,
    reply_valid,
    unwrap_get,
    write_args,
)
from client.names import canonical_platform
from client.protocol import DEFAULT_TYPE

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from typing import Any

    from client._op import Args, Plan, R, Reply, Sent

__all__ = ["Operations", "SyncOperations", "AsyncOperations"]


class Operations:
    """Every typed operation of the clients, written once: see the module's rules."""

    def __init__(self, on_expired: str | None = None) -> None:
        # what `get` does past a credential's expiry: see client.messages.ON_EXPIRED
        self.on_expired = expiry_policy(on_expired)
        self._warned: set[tuple[str, str]] = set()  # expired credentials warned about: once per client

    def _unwrap(self, result: Any, platform: str, credential_type: str) -> str:
        """The value of a ``get`` reply, under this client's expiry policy."""
        return unwrap_get(result, platform, credential_type, self.on_expired, self._warned)

    def _send(self, op: str, args: Args, reply: Reply[R]) -> Sent[R]:
        """The request ``op`` with ``args``, whose result ``reply(self, args, result)``
        shapes. Here, without I/O, it is returned as it is, ``(op, args, reply)``;
        ``SyncOperations`` (through ``client._op.Blocking``) sends it instead."""
        request: Any = (op, args, reply)
        return request  # type: ignore[no-any-return]

    @single
    def hello(self) -> Sent[dict[str, Any]]:
        """The agent's protocol and version and the ops it supports."""
        return self._send("hello", {}, reply_map)

    @single
    def status(self) -> Sent[dict[str, Any]]:
        """Lock state, key source, vault, hardening and counters of the agent."""
        return self._send("status", {}, reply_map)

    @single
    def stop(self) -> Sent[None]:
        """Ask the agent to exit (after the requests in flight)."""
        return self._send("stop", {}, reply_none)

    @single
    def init(
        self, key_source: str | None = None, passphrase: str | None = None, *, recovery_code: bool = False
    ) -> Sent[dict[str, Any]]:
        """Create the vault and its master key (``key_source``: keyring or passphrase); with
        ``recovery_code``, its first recovery code too (the result's ``recovery_code``)."""
        args = given(key_source=key_source, passphrase=passphrase, recovery_code=recovery_code or None)
        return self._send("init", args, reply_map)

    @single
    def unlock(self, passphrase: str | None = None, lock_after: float | None = None) -> Sent[None]:
        """Unlock the vault (a passphrase vault needs its passphrase; a keystore vault, none);
        ``lock_after``: lock again that many seconds later, whatever the use."""
        return self._send("unlock", given(passphrase=passphrase, lock_after=lock_after), reply_none)

    @single
    def lock(self) -> Sent[None]:
        """Drop the master key and every cached value; holds until an explicit unlock."""
        return self._send("lock", {}, reply_none)

    @single
    def store(
        self,
        platform: str,
        value: str,
        credential_type: str = DEFAULT_TYPE,
        metadata: Mapping[str, Any] | None = None,
        *,
        validate: bool = True,
        expires_at: float | None = None,
        keep: bool = False,
        merge: bool = False,
        clear_expiry: bool = False,
        remote: str | None = None,
    ) -> Sent[None]:
        """Store a credential, replacing one of the same name (``remote``: in that team
        vault, with check-and-set). ``keep``: a replaced credential keeps its metadata and
        expiry where none is given (``clear_expiry`` drops a kept expiry); ``merge``: the
        given metadata is laid over the replaced credential's. ``put`` says which it did."""
        args = write_args(
            platform,
            value,
            credential_type,
            metadata,
            validate,
            expires_at,
            keep=keep,
            merge=merge,
            clear_expiry=clear_expiry,
            remote=remote,
        )
        return self._send("store", args, reply_none)

    @single
    def put(
        self,
        platform: str,
        value: str,
        credential_type: str = DEFAULT_TYPE,
        metadata: Mapping[str, Any] | None = None,
        *,
        validate: bool = True,
        expires_at: float | None = None,
        keep: bool = False,
        merge: bool = False,
        clear_expiry: bool = False,
        remote: str | None = None,
    ) -> Sent[dict[str, Any]]:
        """``store``, answering what it did: ``{"created": True}`` for a new credential,
        ``False`` for one it replaced (a team vault's answer adds ``remote`` and ``version``)."""
        args = write_args(
            platform,
            value,
            credential_type,
            metadata,
            validate,
            expires_at,
            keep=keep,
            merge=merge,
            clear_expiry=clear_expiry,
            remote=remote,
        )
        return self._send("store", args, reply_map)

    @single
    def update(
        self,
        platform: str,
        value: str,
        credential_type: str = DEFAULT_TYPE,
        metadata: Mapping[str, Any] | None = None,
        *,
        validate: bool = True,
        expires_at: float | None = None,
        remote: str | None = None,
    ) -> Sent[None]:
        """Replace a stored credential; ``NotFound`` if there is none (``remote``: in that team
        vault, with check-and-set)."""
        args = write_args(platform, value, credential_type, metadata, validate, expires_at, remote=remote)
        return self._send("update", args, reply_none)

    @single
    def get(self, platform: str, credential_type: str = DEFAULT_TYPE) -> Sent[str]:
        """The credential's value (past its expiry: as ``on_expired`` says)."""
        return self._send("get", get_args(platform, credential_type, self.on_expired), _credential)

    @plan
    def get_many(self, names: Iterable[str | tuple[str, str]]) -> Plan[list[str]]:
        """Fetch several credentials in one pipelined round trip; raises the first error."""
        return (yield from _get_many(self, [name_pair(n) for n in names]))

    @single
    def delete(self, platform: str, credential_type: str = DEFAULT_TYPE, *, remote: str | None = None) -> Sent[None]:
        """Delete a stored credential (``remote``: from that team vault); ``NotFound`` if there is none."""
        args = name_args(platform, credential_type)
        if remote is not None:
            args["remote"] = remote
        return self._send("delete", args, reply_none)

    @single
    def rename(
        self,
        platform: str,
        new_platform: str,
        credential_type: str = DEFAULT_TYPE,
        new_credential_type: str = DEFAULT_TYPE,
        *,
        replace: bool = False,
    ) -> Sent[dict[str, Any]]:
        """Move a credential to a new name with its metadata, times and expiry (one
        transaction); ``AlreadyExists`` if the new name is taken, unless ``replace``."""
        args = name_args(platform, credential_type)
        args["new_platform"] = new_platform
        if new_credential_type != DEFAULT_TYPE:
            args["new_credential_type"] = new_credential_type
        if replace:
            args["replace"] = True
        return self._send("rename", args, reply_map)

    @single
    def metadata(self, platform: str, credential_type: str = DEFAULT_TYPE) -> Sent[dict[str, Any]]:
        """The credential's entry: names, metadata, timestamps; never its value."""
        return self._send("metadata", name_args(platform, credential_type), reply_map)

    @single
    def validate(self, platform: str, value: str) -> Sent[bool]:
        """Whether ``value`` passes the platform's format rule (checked by the agent)."""
        return self._send("validate", {"platform": platform, "value": value}, reply_valid)

    @single
    def invalid_reason(self, platform: str, value: str) -> Sent[str | None]:
        """Why ``value`` fails the platform's format rule (checked by the agent); None if it passes."""
        return self._send("validate", {"platform": platform, "value": value}, reply_reason)

    @single
    def audit(
        self,
        since: float | None = None,
        platform: str | None = None,
        limit: int | None = None,
        by: str | None = None,
    ) -> Sent[list[dict[str, Any]]]:
        """Audit-log rows, oldest first (never values): since a Unix time, of one platform,
        of one program ``by`` (an executable, a Python script or module, or a command
        ``agent exec``/``run`` started), the newest ``limit`` (the agent's default when not given)."""
        return self._send("audit", given(since=since, platform=platform, limit=limit, by=by), reply_rows)

    @single
    def rotate_key(self, passphrase: str | None = None, new_passphrase: str | None = None) -> Sent[dict[str, Any]]:
        """Re-encrypt every credential under a new master key (a passphrase vault asks
        for its passphrase, and may take a new one)."""
        return self._send("rotate_key", given(passphrase=passphrase, new_passphrase=new_passphrase), reply_map)

    @single
    def encrypt(self, data: str) -> Sent[bytes]:
        """``data`` encrypted by the agent under its vault's key, which never leaves it."""
        return self._send("encrypt", {"data": data}, reply_token)

    @single
    def decrypt(self, token: bytes | str) -> Sent[str]:
        """The text of a token that ``encrypt`` made; ``InvalidToken`` for any other."""
        # a token read back from a text file is the same ASCII (as Fernet takes either)
        return self._send("decrypt", {"token": token.encode() if isinstance(token, str) else token}, reply_text)

    @single
    def rekey(
        self, key_source: str, passphrase: str | None = None, new_passphrase: str | None = None
    ) -> Sent[dict[str, Any]]:
        """Move the master key to another key source (no credential is re-encrypted): a
        passphrase vault gives its ``passphrase``; to ``passphrase``, a ``new_passphrase``."""
        return self._send(
            "rekey", given(key_source=key_source, passphrase=passphrase, new_passphrase=new_passphrase), reply_map
        )

    @single
    def recovery_code(self, passphrase: str | None = None) -> Sent[str]:
        """A new recovery code for this vault (replacing an earlier one); shown once."""
        return self._send("recovery_code", given(passphrase=passphrase), reply_code)

    @single
    def recover(self, code: str, key_source: str, new_passphrase: str | None = None) -> Sent[dict[str, Any]]:
        """Open the vault with its recovery code, put the key in ``key_source``, unlock."""
        return self._send("recover", given(code=code, key_source=key_source, new_passphrase=new_passphrase), reply_map)

    @single
    def remote_login(
        self,
        remote: str,
        token: str | None = None,
        *,
        role_id: str | None = None,
        secret_id: str | None = None,
        jwt: str | None = None,
        jwt_role: str | None = None,
        jwt_file: str | None = None,
    ) -> Sent[dict[str, Any]]:
        """Give a team vault a token (or an AppRole's ``role_id`` and ``secret_id``, or a
        ``jwt`` or the absolute path of a ``jwt_file`` for ``jwt_role`` of its jwt auth
        method): checked there, then kept sealed in the local vault. The result names no secret."""
        args = given(
            remote=remote,
            token=token,
            role_id=role_id,
            secret_id=secret_id,
            jwt=jwt,
            jwt_role=jwt_role,
            jwt_file=jwt_file,
        )
        return self._send("remote_login", args, reply_map)

    @single
    def remote_status(self) -> Sent[list[dict[str, Any]]]:
        """Per team vault: reachable or not, the node that answered last, cache age, token TTL."""
        return self._send("remote_status", {}, reply_rows)

    @single
    def remote_sync(self, remote: str | None = None) -> Sent[list[dict[str, Any]]]:
        """Refresh the cache of one team vault (or all) now; each remote's status after it."""
        return self._send("remote_sync", given(remote=remote), reply_rows)

    @single
    def history(
        self, platform: str | None = None, credential_type: str | None = None, *, limit: int | None = None
    ) -> Sent[list[dict[str, Any]]]:
        """Previous values of a credential (of every one without ``platform``), newest
        first: version, when it was set and replaced, why (``replaced``, ``deleted``) and by
        which program; never values."""
        args = given(platform=platform, credential_type=credential_type, limit=limit)
        return self._send("history", args, reply_rows)

    @single
    def history_value(
        self, platform: str, version: int = 1, credential_type: str = DEFAULT_TYPE
    ) -> Sent[dict[str, Any]]:
        """One previous value (``version`` 1: the last before the current one, or before it
        was deleted) with its metadata, expiry and times."""
        return self._send("history_value", {**name_args(platform, credential_type), "version": version}, reply_map)

    @single
    def history_restore(
        self, platform: str, version: int = 1, credential_type: str = DEFAULT_TYPE
    ) -> Sent[dict[str, Any]]:
        """Make a previous value current again (the value it replaces joins the history)."""
        return self._send("history_restore", {**name_args(platform, credential_type), "version": version}, reply_map)

    @single
    def approvals(self) -> Sent[list[dict[str, Any]]]:
        """Reads waiting for the user's approval ([access] rules): id, name, the program asking."""
        return self._send("approvals", {}, reply_rows)

    @single
    def approve(
        self,
        request: int,
        secret: str | None = None,
        *,
        allow: bool = True,
        remember: str | None = None,
        for_s: float | None = None,
    ) -> Sent[dict[str, Any]]:
        """Answer a waiting read: allowing needs ``secret`` (the vault's passphrase, or a
        keystore vault's approval PIN); ``remember`` ``once``, ``process`` (the default) or
        ``program``, or ``for_s`` seconds for any caller."""
        args = given(request=request, allow=allow, secret=secret, remember=remember, for_s=for_s)
        return self._send("approve", args, reply_map)

    @single
    def approval_pin(self, pin: str, current: str | None = None) -> Sent[None]:
        """Set a keystore vault's approval PIN (``current``: the one it replaces)."""
        return self._send("approval_pin", given(pin=pin, current=current), reply_none)

    @single
    def grant(self, names: Iterable[str | tuple[str, str]]) -> Sent[dict[str, Any]]:
        """Grant these credentials to this process and its descendants: they read them
        without a question, and any other credential only with the user's approval."""
        return self._send("grant", {"keys": [list(name_pair(n)) for n in names]}, reply_map)

    @single
    def approve_here(self, tty: str) -> Sent[dict[str, Any]]:
        """Name this user's terminal ``tty`` as where the configured pinentry asks for approvals."""
        return self._send("approve_here", {"tty": tty}, reply_map)

    @plan
    def credentials_for(self, platform: str) -> Plan[dict[str, str]]:
        """Every credential of ``platform`` keyed by type: ``{"api_key": ...}`` (two round trips)."""
        platform = canonical_platform(platform)
        types = credentials_of(platform, (yield from _listing()))
        values = yield from _get_many(self, [(platform, t) for t in types])
        return {field_name(t): v for t, v in zip(types, values, strict=True)}

    # last: below this line `list` means the operation, not the builtin
    @plan
    def list(self) -> Plan[list[dict[str, Any]]]:
        """Every credential's entry, fetched ``protocol.LIST_PAGE`` at a time (a whole
        listing of large metadata does not fit one frame)."""
        return (yield from _listing())


def _listing() -> Plan[list[dict[str, Any]]]:
    pages = ListPages()
    while (args := pages.next_args()) is not None:
        pages.add((yield "list", args))
    return pages.entries


def _get_many(client: Operations, pairs: list[tuple[str, str]]) -> Plan[list[str]]:
    results: list[Any] = yield [("get", get_args(p, t, client.on_expired)) for p, t in pairs]
    for r in results:
        if isinstance(r, errors.AgentError):
            raise r
    return [client._unwrap(r, p, t) for r, (p, t) in zip(results, pairs, strict=True)]


def _credential(client: Operations, args: Args, result: Any) -> str:
    """The reply of ``get``."""
    if type(result) is str:  # the common reply: no expiry to look at
        return result
    return client._unwrap(result, args["platform"], args.get("credential_type", DEFAULT_TYPE))


class SyncOperations(Blocking, Operations):
    """The operations as blocking methods; a subclass supplies the transport."""


class AsyncOperations(Awaiting, Operations):
    """The operations as coroutine methods; a subclass supplies the transport."""


install(Operations, SyncOperations, AsyncOperations)
