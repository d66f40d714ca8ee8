"""What an operation of the clients is, and the two ways to run one: blocking and awaited.
The operations themselves are in ``client._ops``.

Rules of this module:
- no I/O, and nothing of any particular operation. An operation of one request
  (``@single``) is a function from the method's arguments to ``self._send(op, args,
  reply)``: the request, and how its result becomes the method's. An operation of
  several (``@plan``) is a generator that yields a request ``(op, args)`` or a batch
  of them (a list, sent pipelined), is sent back the result (for a batch, each
  result or the ``AgentError`` it raised), and returns the method's result;
- ``Blocking`` and ``Awaiting`` are the two ways: ``install`` gives a ``Blocking``
  class each plan as a blocking method (a single-request operation is the method as
  it is, since ``Blocking._send`` sends), and an ``Awaiting`` class each operation as
  a coroutine method. A client supplies only the transport: ``call`` and ``call_many``;
- no typing at run time: ``Client`` loads this module in every process that wants
  one key. The generic, overloaded view that gives ``Client.get(...) -> str`` and
  ``await AsyncClient.get(...) -> str`` exists only for the type checker.
"""

from __future__ import annotations

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


__all__ = ["Op", "single", "plan", "Blocking", "Awaiting", "install"]


class _Op:
    """One operation, as ``client._ops.Operations`` holds it: its function, and whether
    that is a plan (several requests) or a single request."""

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
                fn.__annotations__["return"] = result[len(kind) : -1]

    def __repr__(self) -> str:
        return f"<operation {self.name}>"


if TYPE_CHECKING:

    class Op(_Op, Generic[P, R]):
        """What the type checker sees: a descriptor whose methods block on a
        ``Blocking`` class and return coroutines on an ``Awaiting`` one."""

        fn: Callable[Concatenate[Any, P], Sent[R] | Plan[R]]

        def __init__(self, fn: Callable[Concatenate[Any, P], Sent[R] | Plan[R]], is_plan: bool) -> None: ...

        @overload
        def __get__(self, obj: None, owner: type[Any] | None = None) -> Op[P, R]: ...
        @overload
        def __get__(self, obj: Blocking, owner: type[Any] | None = None) -> Callable[P, R]: ...
        @overload
        def __get__(self, obj: Awaiting, owner: type[Any] | None = None) -> Callable[P, Coroutine[Any, Any, R]]: ...
        def __get__(self, obj: object, owner: type[Any] | None = None) -> Any: ...

else:
    Op = _Op  # at run time, a plain record: each client class holds real methods (see install)


def single(fn: Callable[Concatenate[Any, P], Sent[R]]) -> Op[P, R]:
    """An operation of one request: ``fn`` returns ``self._send(op, args, reply)``."""
    return Op(fn, is_plan=False)


def plan(steps: Callable[Concatenate[Any, P], Plan[R]]) -> Op[P, R]:
    """An operation of several requests: ``steps`` is its plan (see the module's rules)."""
    return Op(steps, is_plan=True)


class Blocking:
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


class Awaiting:
    """The operations as coroutine methods; a subclass supplies the transport."""

    async def call(self, op: str, args: Mapping[str, Any] | None = None) -> Any:
        """Send one request and return its result (or raise its error)."""
        raise NotImplementedError

    async def call_many(self, requests: Iterable[tuple[str, Mapping[str, Any]]]) -> list[Any]:
        """Pipeline requests; returns each result or the ``AgentError`` it raised."""
        raise NotImplementedError


def _run(client: Blocking, steps: Plan[Any]) -> Any:
    send = steps.send
    try:
        step = send(None)
        while True:
            step = send(client.call_many(step) if isinstance(step, list) else client.call(*step))
    except StopIteration as done:
        return done.value


async def _arun(client: Awaiting, steps: Plan[Any]) -> Any:
    send = steps.send
    try:
        step = send(None)
        while True:
            step = send(await client.call_many(step) if isinstance(step, list) else await client.call(*step))
    except StopIteration as done:
        return done.value


def _sync_method(op: _Op, owner: type) -> Callable[..., Any]:
    fn = op.fn
    if not op.is_plan:
        return fn  # Blocking._send makes it the method as it is

    def method(self: Blocking, *args: Any, **kwargs: Any) -> Any:
        return _run(self, fn(self, *args, **kwargs))

    return _named(method, op, owner)


def _async_method(op: _Op, owner: type) -> Callable[..., Any]:
    fn = op.fn
    if op.is_plan:

        async def method(self: Awaiting, *args: Any, **kwargs: Any) -> Any:
            return await _arun(self, fn(self, *args, **kwargs))

    else:

        async def method(self: Awaiting, *args: Any, **kwargs: Any) -> Any:
            name, request_args, reply = fn(self, *args, **kwargs)  # the operations' _send: not sent yet
            return reply(self, request_args, await self.call(name, request_args))

    return _named(method, op, owner)


def _named(method: Callable[..., Any], op: _Op, owner: type) -> Callable[..., Any]:
    method.__name__ = op.name
    method.__qualname__ = f"{owner.__name__}.{op.name}"
    method.__doc__ = op.fn.__doc__
    method.__wrapped__ = op.fn  # type: ignore[attr-defined]  # for inspect.signature() and help()
    return method


def install(operations: type, blocking: type[Blocking], awaiting: type[Awaiting]) -> None:
    """Give ``blocking`` and ``awaiting`` (subclasses of ``operations``) each operation
    of ``operations`` as a method of their kind."""
    for name, op in list(vars(operations).items()):
        if isinstance(op, _Op):
            setattr(blocking, name, _sync_method(op, blocking))
            setattr(awaiting, name, _async_method(op, awaiting))
