"""The typed operations of both clients, written once (their request builders and reply
helpers are in ``client._messages``).

Rules of this module:
- no I/O. An operation is a *plan*: a generator that yields a request ``(op, args)``
  or a batch of them (a list, sent pipelined), is sent back the result (for a batch,
  each result or the ``AgentError`` it raised), and returns what the method returns.
  A request whose reply is an error raises it to the caller; the plan is abandoned;
- an operation of exactly one request is written as that request (``@single``): a
  function from the method's arguments to the request's args, and a function from
  the reply to the result. The clients run these without a generator: ``get`` is
  the hot path of every connector;
- ``Operations`` holds every operation; ``SyncOperations`` and ``AsyncOperations``
  turn each into a method once, when this module loads (blocking, or a coroutine),
  so a call costs what a hand-written method's does. The clients subclass them and
  supply only the transport: ``call`` and ``call_many``;
- adding an op: its ``OPS`` entry in ``client.protocol``, its agent handler, and
  one definition in ``Operations`` below; never a client by hand;
- no typing at run time: ``Client`` loads this module in every process that wants
  one key. The generic, overloaded view that gives ``Client.get(...) -> str`` and
  ``await AsyncClient.get(...) -> str`` exists only for the type checker.
"""

from __future__ import annotations

from client import errors
from client._messages import (
    ListPages,
    credentials_of,
    field_name,
    get_args,
    given,
    name_args,
    name_pair,
    unwrap_get,
    write_args,
)
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

__all__ = [
    "Operations",
    "SyncOperations",
    "AsyncOperations",
    "Op",
    "single",
    "plan",
]


# --- replies of single-request operations -------------------------------------------------
def _nothing(client: Operations, args: Args, result: Any) -> None:
    return None


def _map(client: Operations, args: Args, result: Any) -> dict[str, Any]:
    shaped: dict[str, Any] = result
    return shaped


def _rows(client: Operations, args: Args, result: Any) -> list[dict[str, Any]]:
    shaped: list[dict[str, Any]] = result
    return shaped


def _valid(client: Operations, args: Args, result: Any) -> bool:
    return bool(result["valid"])


def _credential(client: Operations, args: Args, result: Any) -> str:
    if type(result) is str:  # the common reply: no expiry to look at
        return result
    return unwrap_get(result, args["platform"], args.get("credential_type", DEFAULT_TYPE), client.on_expired,
                      client._warned)


# --- operations --------------------------------------------------------------------------
class _Op:
    """One operation: its name (the protocol op of a single request), its plan, and
    for a single request, the request and reply functions the clients run directly."""

    __slots__ = ("doc", "name", "plan", "reply", "request")

    def __init__(
        self,
        name: str,
        doc: str | None,
        *,
        plan: Callable[..., Plan[Any]] | None = None,
        request: Callable[..., Args] | None = None,
        reply: Reply[Any] | None = None,
    ) -> None:
        self.name = name
        self.doc = doc
        self.request = request
        self.reply = reply
        self.plan = plan if plan is not None else _single_plan(name, request, reply)

    def __repr__(self) -> str:
        return f"<operation {self.name}>"


def _single_plan(name: str, request: Callable[..., Args] | None, reply: Reply[Any] | None) -> Callable[..., Plan[Any]]:
    """The plan of a single-request operation (what the clients' direct path does)."""
    assert request is not None and reply is not None

    def single_plan(client: Operations, *args: Any, **kwargs: Any) -> Plan[Any]:
        request_args = request(client, *args, **kwargs)
        return reply(client, request_args, (yield name, request_args))

    return single_plan


if TYPE_CHECKING:

    class Op(_Op, Generic[P, R]):
        """What the type checker sees: a descriptor whose methods block on a
        ``SyncOperations`` and return coroutines on an ``AsyncOperations``."""

        plan: Callable[Concatenate[Any, P], Plan[R]]

        def __init__(
            self,
            name: str,
            doc: str | None,
            *,
            plan: Callable[Concatenate[Any, P], Plan[R]] | None = None,
            request: Callable[Concatenate[Any, P], Args] | None = None,
            reply: Reply[R] | None = None,
        ) -> None: ...

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
    Op = _Op  # at run time, a plain object: each client class holds real methods (see _install)


def single(reply: Reply[R]) -> Callable[[Callable[Concatenate[Any, P], Args]], Op[P, R]]:
    """An operation of one request named as the function, which returns its args;
    ``reply(client, args, result)`` makes the method's result."""

    def make(request: Callable[Concatenate[Any, P], Args]) -> Op[P, R]:
        return Op(request.__name__, request.__doc__, request=request, reply=reply)

    return make


def plan(steps: Callable[Concatenate[Any, P], Plan[R]]) -> Op[P, R]:
    """An operation of several requests: ``steps`` is its plan (see the module's rules)."""
    return Op(steps.__name__, steps.__doc__, plan=steps)


class Operations:
    """Every typed operation of the clients, written once: see the module's rules."""

    # what the operations read of their client; each client sets them in __init__
    on_expired: str
    _warned: set[tuple[str, str]]

    @single(_map)
    def hello(self) -> Args:
        """The agent's protocol and version and the ops it supports."""
        return {}

    @single(_map)
    def status(self) -> Args:
        """Lock state, key source, vault, hardening and counters of the agent."""
        return {}

    @single(_nothing)
    def stop(self) -> Args:
        """Ask the agent to exit (after the requests in flight)."""
        return {}

    @single(_map)
    def init(self, key_source: str | None = None, passphrase: str | None = None) -> Args:
        """Create the vault and its master key (``key_source``: keyring or passphrase)."""
        return given(key_source=key_source, passphrase=passphrase)

    @single(_nothing)
    def unlock(self, passphrase: str | None = None) -> Args:
        """Unlock the vault (a passphrase vault needs its passphrase; a keystore vault, none)."""
        return given(passphrase=passphrase)

    @single(_nothing)
    def lock(self) -> Args:
        """Drop the master key and every cached value; holds until an explicit unlock."""
        return {}

    @single(_nothing)
    def store(
        self,
        platform: str,
        value: str,
        credential_type: str = DEFAULT_TYPE,
        metadata: Mapping[str, Any] | None = None,
        *,
        validate: bool = True,
        expires_at: float | None = None,
    ) -> Args:
        """Store a credential, replacing one of the same name."""
        return write_args(platform, value, credential_type, metadata, validate, expires_at)

    @single(_nothing)
    def update(
        self,
        platform: str,
        value: str,
        credential_type: str = DEFAULT_TYPE,
        metadata: Mapping[str, Any] | None = None,
        *,
        validate: bool = True,
        expires_at: float | None = None,
    ) -> Args:
        """Replace a stored credential; ``NotFound`` if there is none."""
        return write_args(platform, value, credential_type, metadata, validate, expires_at)

    @single(_credential)
    def get(self, platform: str, credential_type: str = DEFAULT_TYPE) -> Args:
        """The credential's value (past its expiry: as ``on_expired`` says)."""
        return get_args(platform, credential_type, self.on_expired)

    @plan
    def get_many(self, names: Iterable[str | tuple[str, str]]) -> Plan[list[str]]:
        """Fetch several credentials in one pipelined round trip; raises the first error."""
        return (yield from _get_many(self, [name_pair(n) for n in names]))

    @single(_nothing)
    def delete(self, platform: str, credential_type: str = DEFAULT_TYPE) -> Args:
        """Delete a stored credential; ``NotFound`` if there is none."""
        return name_args(platform, credential_type)

    @single(_map)
    def metadata(self, platform: str, credential_type: str = DEFAULT_TYPE) -> Args:
        """The credential's entry: names, metadata, timestamps; never its value."""
        return name_args(platform, credential_type)

    @single(_valid)
    def validate(self, platform: str, value: str) -> Args:
        """Whether ``value`` passes the platform's format rule (checked by the agent)."""
        return {"platform": platform, "value": value}

    @single(_rows)
    def audit(self, since: float | None = None, platform: str | None = None, limit: int | None = None) -> Args:
        """Audit-log rows, oldest first (never values): since a Unix time, of one platform,
        the newest ``limit`` (the agent's default when not given)."""
        return given(since=since, platform=platform, limit=limit)

    @single(_map)
    def rotate_key(self, passphrase: str | None = None, new_passphrase: str | None = None) -> Args:
        """Re-encrypt every credential under a new master key (a passphrase vault asks
        for its passphrase, and may take a new one)."""
        return given(passphrase=passphrase, new_passphrase=new_passphrase)

    @plan
    def credentials_for(self, platform: str) -> Plan[dict[str, str]]:
        """Every credential of ``platform`` keyed by type: ``{"api_key": ...}`` (two round trips)."""
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
    name, request, reply, steps = op.name, op.request, op.reply, op.plan
    if request is not None and reply is not None:

        def method(self: SyncOperations, *args: Any, **kwargs: Any) -> Any:
            request_args = request(self, *args, **kwargs)
            return reply(self, request_args, self.call(name, request_args))

    else:

        def method(self: SyncOperations, *args: Any, **kwargs: Any) -> Any:
            return _run(self, steps(self, *args, **kwargs))

    return method


def _async_method(op: _Op) -> Callable[..., Any]:
    name, request, reply, steps = op.name, op.request, op.reply, op.plan
    if request is not None and reply is not None:

        async def method(self: AsyncOperations, *args: Any, **kwargs: Any) -> Any:
            request_args = request(self, *args, **kwargs)
            return reply(self, request_args, await self.call(name, request_args))

    else:

        async def method(self: AsyncOperations, *args: Any, **kwargs: Any) -> Any:
            return await _arun(self, steps(self, *args, **kwargs))

    return method


def _named(method: Callable[..., Any], op: _Op, owner: type, view: Callable[..., Any]) -> Callable[..., Any]:
    method.__name__ = op.name
    method.__qualname__ = f"{owner.__name__}.{op.name}"
    method.__doc__ = op.doc
    method.__wrapped__ = view  # type: ignore[attr-defined]
    return method


def _view(op: _Op) -> Callable[..., Any]:
    """What ``inspect.signature()`` and ``help()`` show of a method (they follow
    ``__wrapped__``): the operation's own function, with the method's result as its
    return annotation instead of the request args or the plan. A copy made without
    importing inspect, which every client would pay for."""
    fn: Any = op.request or op.plan
    view: Any = type(fn)(fn.__code__, fn.__globals__, op.name, fn.__defaults__, fn.__closure__)
    view.__kwdefaults__ = fn.__kwdefaults__
    view.__qualname__, view.__doc__, view.__module__ = fn.__qualname__, fn.__doc__, fn.__module__
    result = (op.reply.__annotations__ if op.reply else fn.__annotations__).get("return")
    if op.reply is None and isinstance(result, str) and result.startswith("Plan[") and result.endswith("]"):
        result = result[len("Plan["):-1]
    view.__annotations__ = {**fn.__annotations__, "return": result}
    return view  # type: ignore[no-any-return]


def _install() -> None:
    for name, op in list(vars(Operations).items()):
        if isinstance(op, _Op):
            view = _view(op)
            setattr(SyncOperations, name, _named(_sync_method(op), op, SyncOperations, view))
            setattr(AsyncOperations, name, _named(_async_method(op), op, AsyncOperations, view))


_install()
