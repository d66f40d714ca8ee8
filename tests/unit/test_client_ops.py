"""The operations of ``client._ops``, without sockets: every op of the protocol is a
method of both clients, every request they build passes the agent's own argument
checks, and the plans shape replies as the clients promise."""

from __future__ import annotations

import inspect
import time
from collections.abc import Iterator
from typing import Any

import pytest

from client import AsyncClient, Client, errors, protocol
from client._ops import Operations

# one call of each operation, as a caller would make it
SAMPLE_CALLS: dict[str, tuple[tuple[Any, ...], dict[str, Any]]] = {
    "hello": ((), {}),
    "status": ((), {}),
    "stop": ((), {}),
    "init": (("passphrase", "pw"), {}),
    "unlock": (("pw",), {}),
    "lock": ((), {}),
    "store": (("runpod", "r" * 25, "token", {"team": "ml"}), {"validate": False, "expires_at": 2e9}),
    "update": (("runpod", "r" * 25), {}),
    "get": (("runpod", "token"), {}),
    "delete": (("runpod",), {}),
    "rename": (("runpod", "lambdalabs", "token", "api-key"), {"replace": True}),
    "list": ((), {}),
    "metadata": (("runpod",), {}),
    "validate": (("runpod", "r" * 25), {}),
    "audit": ((), {"since": 1.7e9, "platform": "runpod", "limit": 5, "by": "train.py"}),
    "rotate_key": (("old", "new"), {}),
    "encrypt": (("any text ✓",), {}),
    "decrypt": ((b"gAAAAAtoken",), {}),

    "rekey": (("keyring", "pw"), {}),
    "recovery_code": (("pw",), {}),
    "recover": (("ABCD-EFGH", "passphrase", "new pw"), {}),
    "remote_login": (("team", "t"), {}),
    "remote_status": ((), {}),
    "remote_sync": (("team",), {}),
    "history": (("runpod",), {"limit": 5}),
    "history_value": (("runpod", 2), {}),
    "history_restore": (("runpod", 1, "api-secret"), {}),
    "approvals": ((), {}),
    "approve": ((3, "pw"), {"remember": "program"}),
    "approval_pin": (("1234",), {"current": "0000"}),
    "grant": ((["huggingface", ("runpod", "api-secret")],), {}),
    "approve_here": (("/dev/pts/3",), {}),
}


class Owner(Operations):
    """A client without I/O: ``Operations._send`` hands back each request unsent."""

    def __init__(self, on_expired: str = "warn") -> None:
        self.on_expired = on_expired
        self._warned: set[tuple[str, str]] = set()


def _one(owner: Owner, name: str, args: dict[str, Any], reply: Any) -> Iterator[Any]:
    result = yield name, args
    return reply(owner, args, result)


def steps(name: str, *args: Any, on_expired: str = "warn", **kwargs: Any) -> Any:
    """The operation ``name`` as a plan, whether it is one (several requests) or not."""
    owner, op = Owner(on_expired), vars(Operations)[name]
    if op.is_plan:
        return op.fn(owner, *args, **kwargs)
    return _one(owner, *op.fn(owner, *args, **kwargs))


def run(plan: Any, *replies: Any) -> Any:
    """Drive a plan: each yield gets the next reply; returns (requests, result)."""
    sent = [next(plan)]
    try:
        for reply in replies:
            sent.append(plan.send(reply))
    except StopIteration as done:
        return sent, done.value
    raise AssertionError(f"the plan wanted more than {len(replies)} replies: {sent[-1]!r}")


def test_every_op_is_a_method_of_both_clients() -> None:
    assert set(SAMPLE_CALLS) == set(protocol.OPS)
    for op in protocol.OPS:
        assert callable(getattr(Client, op)), op
        assert not inspect.iscoroutinefunction(getattr(Client, op)), op
        assert vars(Operations)[op].name == op
        assert inspect.iscoroutinefunction(getattr(AsyncClient, op)), op


def test_the_composite_methods_exist_on_both_clients() -> None:
    for name in ("get_many", "credentials_for", "call", "call_many"):
        assert callable(getattr(Client, name))
        assert inspect.iscoroutinefunction(getattr(AsyncClient, name)), name


def test_methods_show_their_own_signature_and_doc() -> None:
    for cls in (Client, AsyncClient):
        assert str(inspect.signature(cls.get)) == "(self, platform: 'str', credential_type: 'str' = 'api-key') -> 'str'"
        assert cls.get.__name__ == "get" and "credential" in (cls.get.__doc__ or "")
        store = inspect.signature(cls.store)
        assert store.parameters["validate"].kind is inspect.Parameter.KEYWORD_ONLY
        assert store.return_annotation == "None"
        assert inspect.signature(cls.get_many).return_annotation == "list[str]"
        assert inspect.signature(cls.audit).return_annotation == "list[dict[str, Any]]"
        assert "get" in inspect.getsource(cls.get)


@pytest.mark.parametrize("op", sorted(SAMPLE_CALLS))
def test_each_op_sends_itself_with_args_the_agent_accepts(op: str) -> None:
    args, kwargs = SAMPLE_CALLS[op]
    first = next(steps(op, *args, **kwargs))
    name, request_args = first
    assert name == op
    decoded = protocol.decode_request(protocol.encode_request(name, request_args)[protocol.HEADER:])
    assert decoded.op == op and dict(decoded.args) == dict(request_args)


def test_arguments_not_given_are_not_sent() -> None:
    assert next(steps("init")) == ("init", {})
    assert next(steps("unlock")) == ("unlock", {})
    assert next(steps("audit", limit=3)) == ("audit", {"limit": 3})
    assert next(steps("rotate_key", "old")) == ("rotate_key", {"passphrase": "old"})
    assert next(steps("get", "runpod")) == ("get", {"platform": "runpod", "expiry": True})
    assert next(steps("store", "runpod", "v")) == ("store", {"platform": "runpod", "value": "v"})


def test_replies_are_shaped() -> None:
    assert run(steps("get", "runpod"), "the-value")[1] == "the-value"
    assert run(steps("get", "runpod"), {"value": "v", "expires_at": time.time() + 60})[1] == "v"
    assert run(steps("validate", "runpod", "x"), {"valid": False, "reason": "short"})[1] is False
    assert run(steps("lock"), None)[1] is None
    assert run(steps("store", "runpod", "v"), {"created": True})[1] is None
    assert run(steps("status"), {"locked": True})[1] == {"locked": True}


def test_store_and_put_send_keep_merge_and_clear_expiry() -> None:
    sent = ("store", {"platform": "runpod", "value": "v", "expires_at": None, "keep": True, "merge_metadata": True})
    assert next(steps("store", "runpod", "v", keep=True, merge=True, clear_expiry=True)) == sent
    assert next(steps("put", "runpod", "v", keep=True, merge=True, clear_expiry=True)) == sent
    assert run(steps("put", "runpod", "v"), {"created": False})[1] == {"created": False}
    assert run(steps("store", "runpod", "v", keep=True), {"created": False})[1] is None


def test_invalid_reason_is_the_agents_reason_or_none() -> None:
    assert next(steps("invalid_reason", "runpod", "x")) == ("validate", {"platform": "runpod", "value": "x"})
    assert run(steps("invalid_reason", "runpod", "x"), {"valid": False, "reason": "short"})[1] == "short"
    assert run(steps("invalid_reason", "runpod", "x"), {"valid": True, "reason": None})[1] is None


def test_an_expired_credential_is_refused_when_asked() -> None:
    plan = steps("get", "runpod", on_expired="refuse")
    next(plan)
    with pytest.raises(errors.Expired, match="runpod/api-key expired on"):
        plan.send({"value": "v", "expires_at": time.time() - 60})


def test_get_many_is_one_batch_and_raises_the_first_error() -> None:
    sent, result = run(steps("get_many", ["a", ("b", "token")]), ["1", "2"])
    assert sent == [[("get", {"platform": "a", "expiry": True}),
                     ("get", {"platform": "b", "credential_type": "token", "expiry": True})]]
    assert result == ["1", "2"]
    plan = steps("get_many", ["a", "b"])
    next(plan)
    with pytest.raises(errors.NotFound):
        plan.send(["1", errors.NotFound("no b")])
    assert run(steps("get_many", []), [])[1] == []  # still one (empty) exchange, as before


def entry(platform: str, ctype: str = "api-key") -> dict[str, Any]:
    return {"platform": platform, "credential_type": ctype}


def test_list_asks_page_after_page_until_a_short_one() -> None:
    full = [entry(f"p{i:02}") for i in range(protocol.LIST_PAGE)]
    sent, result = run(steps("list"), full, [entry("zz")])
    assert sent == [("list", {"offset": 0, "limit": protocol.LIST_PAGE}),
                    ("list", {"offset": protocol.LIST_PAGE, "limit": protocol.LIST_PAGE,
                              "after": [f"p{protocol.LIST_PAGE - 1:02}", "api-key"]})]
    assert result == [*full, entry("zz")]


def test_credentials_for_lists_then_fetches_every_type_at_once() -> None:
    sent, result = run(steps("credentials_for", "runpod"), [entry("runpod"), entry("runpod", "s3-key"), entry("x")],
                       ["k1", "k2"])
    assert sent[1] == [("get", {"platform": "runpod", "expiry": True}),
                       ("get", {"platform": "runpod", "credential_type": "s3-key", "expiry": True})]
    assert result == {"api_key": "k1", "s3_key": "k2"}
    plan = steps("credentials_for", "nothing")
    next(plan)
    with pytest.raises(errors.NotFound, match="agent set nothing"):
        plan.send([entry("runpod")])
