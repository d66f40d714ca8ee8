"""The typed operations of both clients, written once (their request builders and reply
helpers are in ``client.messages``).

Rules of this module:
- no I/O. An operation of one request (``@single``) is a function from the method's
  arguments to ``self._send(op, args, reply)``: the request, and how its result
  becomes the method's. An operation of several (``@plan``) is a generator that
  yields a request ``(op, args)`` or a batch of them (a list, sent pipelined), is
  sent back the result (for a batch, each result or the ``AgentError`` it raised),
  and returns the method's result. A request whose reply is an error raises it to
  the caller; the plan is abandoned;
- ``Operations`` holds every operation. On ``SyncOperations`` ``_send`` sends and
  returns the shaped result, so a single-request operation is the blocking method
  itself, costing what a hand-written one does (``get`` is the hot path of every
  connector); ``AsyncOperations`` wraps each operation in a coroutine method, and
  ``SyncOperations`` each plan in a blocking one, when this module loads. The
  clients subclass them and supply only the transport: ``call`` and ``call_many``;
- adding an op: its ``OPS`` entry in ``client.protocol``, its agent handler, and
  one definition in ``Operations`` below; never a client by hand;
- no typing at run time: ``Client`` loads this module in every process that wants
  one key. The generic, overloaded view that gives ``Client.get(...) -> str`` and
  ``await AsyncClient.get(...) -> str`` exists only for the type checker.
"""

from __future__ import annotations

from client import errors
from client.messages import (
    ListPages,
    _code,
    _credential,
    _map,
    _nothing,
    _rows,
    _text,
    _token,
    _valid,
    credentials_of,
    field_name,
    get_args,
    given,
    name_args,
    name_pair,
    unwrap_get,
    write_args,
)
from client.names import canonical_platform
from client.protocol import DEFAULT_TYPE

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine, Generator, Iterable, Mapping
    from typing import Any, Concatenate, Generic, ParamSpec, TypeAlias, TypeVar, overload

    P = ParamSpec("P")
    R = TypeVar("R")
    Args: TypeAlias = dict[str, Any]
    Request: TypeAlias = tuple[str, Mapping[str, Any]]
    # one request, or a batch of them
    Step: TypeAlias = Request | list[Request]
    Plan: TypeAlias = Generator[Step, Any, R]
    Reply: TypeAlias = Callable[[Any, Args, Any], R]

    class Sent(Generic[R]):
        """What a single-request operation's function returns: ``_send``'s value
        (the request itself, or on a blocking client the result; see ``Op``)."""

__all__ = [
    "Operations",
    "SyncOperations",
    "AsyncOperations",
    "Op",
    "single",
    "plan",
]


# --- operations --------------------------------------------------------------------------
class _Op:
    """One operation, as ``Operations`` holds it: its function, and whether that is a
    plan (several requests) or a single request."""

    __slots__ = ("fn", "is_plan", "name")

    def __init__(self, fn: Callable[..., Any], is_plan: bool) -> None:
        self.fn = fn
        self.is_plan = is_plan
        self.name: str = fn.__name__
        # what help() and inspect.signature() show of the methods (fn itself, or a wrapper
        # whose __wrapped__ is fn): the method's result, not the Sent/Plan the type checker reads
        result = fn.__annotations__.get("return")
        for kind in ("Sent[", "Plan["):
            if isinstance(result, str) and result.startswith(kind) and result.endswith("]"):
                fn.__annotations__["return"] = result[len(kind):-1]

    def __repr__(self) -> str:
        return f"<operation {self.name}>"


if TYPE_CHECKING:

    class Op(_Op, Generic[P, R]):
        """What the type checker sees: a descriptor whose methods block on a
        ``SyncOperations`` and return coroutines on an ``AsyncOperations``."""

        fn: Callable[Concatenate[Any, P], Sent[R] | Plan[R]]

        def __init__(self, fn: Callable[Concatenate[Any, P], Sent[R] | Plan[R]], is_plan: bool) -> None: ...

        @overload
        def __get__(self, obj: None, owner: type[Any] | None = None) -> Op[P, R]: ...
        @overload
        def __get__(self, obj: SyncOperations, owner: type[Any] | None = None) -> Callable[P, R]: ...
        @overload
        def __get__(
            self, obj: AsyncOperations, owner: type[Any] | None = None
        ) -> Callable[P, Coroutine[Any, Any, R]]: ...
        def __get__(self, obj: object, owner: type[Any] | None = None) -> Any: ...

else:
    Op = _Op  # at run time, a plain record: each client class holds real methods (see _install)


def single(fn: Callable[Concatenate[Any, P], Sent[R]]) -> Op[P, R]:
    """An operation of one request: ``fn`` returns ``self._send(op, args, reply)``."""
    return Op(fn, is_plan=False)


def plan(steps: Callable[Concatenate[Any, P], Plan[R]]) -> Op[P, R]:
    """An operation of several requests: ``steps`` is its plan (see the module's rules)."""
    return Op(steps, is_plan=True)


class Operations:
    """Every typed operation of the clients, written once: see the module's rules."""

    # what the operations read of their client; each client sets them in __init__
    on_expired: str
    _warned: set[tuple[str, str]]

    def _send(self, op: str, args: Args, reply: Reply[R]) -> Sent[R]:
        """The request ``op`` with ``args``, whose result ``reply(self, args, result)``
        shapes. Here, without I/O, it is returned as it is, ``(op, args, reply)``;
        ``SyncOperations`` sends it instead."""
        request: Any = (op, args, reply)
        return request  # type: ignore[no-any-return]

    @single
    def hello(self) -> Sent[dict[str, Any]]:
        """The agent's protocol and version and the ops it supports."""
        return self._send("hello", {}, _map)

    @single
    def status(self) -> Sent[dict[str, Any]]:
        """Lock state, key source, vault, hardening and counters of the agent."""
        return self._send("status", {}, _map)

    @single
    def stop(self) -> Sent[None]:
        """Ask the agent to exit (after the requests in flight)."""
        return self._send("stop", {}, _nothing)

    @single
    def init(self, key_source: str | None = None, passphrase: str | None = None) -> Sent[dict[str, Any]]:
        """Create the vault and its master key (``key_source``: keyring or passphrase)."""
        return self._send("init", given(key_source=key_source, passphrase=passphrase), _map)

    @single
    def unlock(self, passphrase: str | None = None, lock_after: float | None = None) -> Sent[None]:
        """Unlock the vault (a passphrase vault needs its passphrase; a keystore vault, none);
        ``lock_after``: lock again that many seconds later, whatever the use."""
        return self._send("unlock", given(passphrase=passphrase, lock_after=lock_after), _nothing)

    @single
    def lock(self) -> Sent[None]:
        """Drop the master key and every cached value; holds until an explicit unlock."""
        return self._send("lock", {}, _nothing)

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
        remote: str | None = None,
    ) -> Sent[None]:
        """Store a credential, replacing one of the same name (``remote``: in that team
        vault, with check-and-set)."""
        args = write_args(platform, value, credential_type, metadata, validate, expires_at, remote=remote)
        return self._send("store", args, _nothing)

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
        return self._send("update", args, _nothing)

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
        return self._send("delete", args, _nothing)

    @single
    def rename(self, platform: str, new_platform: str, credential_type: str = DEFAULT_TYPE,
               new_credential_type: str = DEFAULT_TYPE, *, replace: bool = False) -> Sent[dict[str, Any]]:
        """Move a credential to a new name with its metadata, times and expiry (one
        transaction); ``AlreadyExists`` if the new name is taken, unless ``replace``."""
        args = name_args(platform, credential_type)
        args["new_platform"] = new_platform
        if new_credential_type != DEFAULT_TYPE:
            args["new_credential_type"] = new_credential_type
        if replace:
            args["replace"] = True
        return self._send("rename", args, _map)

    @single
    def metadata(self, platform: str, credential_type: str = DEFAULT_TYPE) -> Sent[dict[str, Any]]:
        """The credential's entry: names, metadata, timestamps; never its value."""
        return self._send("metadata", name_args(platform, credential_type), _map)

    @single
    def validate(self, platform: str, value: str) -> Sent[bool]:
        """Whether ``value`` passes the platform's format rule (checked by the agent)."""
        return self._send("validate", {"platform": platform, "value": value}, _valid)

    @single
    def audit(
        self, since: float | None = None, platform: str | None = None, limit: int | None = None,
        by: str | None = None,
    ) -> Sent[list[dict[str, Any]]]:
        """Audit-log rows, oldest first (never values): since a Unix time, of one platform,
        of one program ``by`` (an executable, a Python script or module, or a command
        ``agent exec``/``run`` started), the newest ``limit`` (the agent's default when not given)."""
        return self._send("audit", given(since=since, platform=platform, limit=limit, by=by), _rows)

    @single
    def rotate_key(
        self, passphrase: str | None = None, new_passphrase: str | None = None
    ) -> Sent[dict[str, Any]]:
        """Re-encrypt every credential under a new master key (a passphrase vault asks
        for its passphrase, and may take a new one)."""
        return self._send("rotate_key", given(passphrase=passphrase, new_passphrase=new_passphrase), _map)

    @single
    def encrypt(self, data: str) -> Sent[bytes]:
        """``data`` encrypted by the agent under its vault's key, which never leaves it."""
        return self._send("encrypt", {"data": data}, _token)

    @single
    def decrypt(self, token: bytes | str) -> Sent[str]:
        """The text of a token that ``encrypt`` made; ``InvalidToken`` for any other."""
        # a token read back from a text file is the same ASCII (as Fernet takes either)
        return self._send("decrypt", {"token": token.encode() if isinstance(token, str) else token}, _text)

    @single
    def rekey(
        self, key_source: str, passphrase: str | None = None, new_passphrase: str | None = None
    ) -> Sent[dict[str, Any]]:
        """Move the master key to another key source (no credential is re-encrypted): a
        passphrase vault gives its ``passphrase``; to ``passphrase``, a ``new_passphrase``."""
        return self._send("rekey", given(key_source=key_source, passphrase=passphrase,
                                         new_passphrase=new_passphrase), _map)

    @single
    def recovery_code(self, passphrase: str | None = None) -> Sent[str]:
        """A new recovery code for this vault (replacing an earlier one); shown once."""
        return self._send("recovery_code", given(passphrase=passphrase), _code)

    @single
    def recover(self, code: str, key_source: str, new_passphrase: str | None = None) -> Sent[dict[str, Any]]:
        """Open the vault with its recovery code, put the key in ``key_source``, unlock."""
        return self._send("recover", given(code=code, key_source=key_source, new_passphrase=new_passphrase), _map)

    @single
    def remote_login(
        self, remote: str, token: str | None = None, *, role_id: str | None = None, secret_id: str | None = None
    ) -> Sent[dict[str, Any]]:
        """Give a team vault a token (or an AppRole's ``role_id`` and ``secret_id``): checked
        there, then kept sealed in the local vault. The result names no secret."""
        args = given(remote=remote, token=token, role_id=role_id, secret_id=secret_id)
        return self._send("remote_login", args, _map)

    @single
    def remote_status(self) -> Sent[list[dict[str, Any]]]:
        """Per team vault: reachable or not, the node that answered last, cache age, token TTL."""
        return self._send("remote_status", {}, _rows)

    @single
    def remote_sync(self, remote: str | None = None) -> Sent[list[dict[str, Any]]]:
        """Refresh the cache of one team vault (or all) now; each remote's status after it."""
        return self._send("remote_sync", given(remote=remote), _rows)

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
    policy, warned = client.on_expired, client._warned
    results: list[Any] = yield [("get", get_args(p, t, policy)) for p, t in pairs]
    for r in results:
        if isinstance(r, errors.AgentError):
            raise r
    return [unwrap_get(r, p, t, policy, warned) for r, (p, t) in zip(results, pairs, strict=True)]


# --- the two ways to run an operation ------------------------------------------------------
class SyncOperations(Operations):
    """The operations as blocking methods; a subclass supplies the transport."""

    def call(self, op: str, args: Mapping[str, Any] | None = None) -> Any:
        """Send one request and return its result (or raise its error)."""
        raise NotImplementedError

    def call_many(self, requests: Iterable[tuple[str, Mapping[str, Any]]]) -> list[Any]:
        """Pipeline requests; returns each result or the ``AgentError`` it raised."""
        raise NotImplementedError

    def _send(self, op: str, args: Args, reply: Reply[R]) -> Sent[R]:
        # sent here, so that a single-request operation is itself the blocking method
        # and returns the result: Op.__get__ tells the type checker so
        return reply(self, args, self.call(op, args))  # type: ignore[return-value]


class AsyncOperations(Operations):
    """The operations as coroutine methods; a subclass supplies the transport."""

    async def call(self, op: str, args: Mapping[str, Any] | None = None) -> Any:
        """Send one request and return its result (or raise its error)."""
        raise NotImplementedError

    async def call_many(self, requests: Iterable[tuple[str, Mapping[str, Any]]]) -> list[Any]:
        """Pipeline requests; returns each result or the ``AgentError`` it raised."""
        raise NotImplementedError


def _run(client: SyncOperations, steps: Plan[Any]) -> Any:
    send = steps.send
    try:
        step = send(None)
        while True:
            step = send(client.call_many(step) if isinstance(step, list) else client.call(*step))
    except StopIteration as done:
        return done.value


async def _arun(client: AsyncOperations, steps: Plan[Any]) -> Any:
    send = steps.send
    try:
        step = send(None)
        while True:
            step = send(await client.call_many(step) if isinstance(step, list) else await client.call(*step))
    except StopIteration as done:
        return done.value


def _sync_method(op: _Op) -> Callable[..., Any]:
    fn = op.fn
    if not op.is_plan:
        return fn  # SyncOperations._send makes it the method as it is

    def method(self: SyncOperations, *args: Any, **kwargs: Any) -> Any:
        return _run(self, fn(self, *args, **kwargs))

    return _named(method, op, SyncOperations)


def _async_method(op: _Op) -> Callable[..., Any]:
    fn = op.fn
    if op.is_plan:

        async def method(self: AsyncOperations, *args: Any, **kwargs: Any) -> Any:
            return await _arun(self, fn(self, *args, **kwargs))

    else:

        async def method(self: AsyncOperations, *args: Any, **kwargs: Any) -> Any:
            name, request_args, reply = fn(self, *args, **kwargs)  # Operations._send: not sent yet
            return reply(self, request_args, await self.call(name, request_args))

    return _named(method, op, AsyncOperations)


def _named(method: Callable[..., Any], op: _Op, owner: type) -> Callable[..., Any]:
    method.__name__ = op.name
    method.__qualname__ = f"{owner.__name__}.{op.name}"
    method.__doc__ = op.fn.__doc__
    method.__wrapped__ = op.fn  # type: ignore[attr-defined]  # for inspect.signature() and help()
    return method


def _install() -> None:
    for name, op in list(vars(Operations).items()):
        if isinstance(op, _Op):
            setattr(SyncOperations, name, _sync_method(op))
            setattr(AsyncOperations, name, _async_method(op))


_install()
