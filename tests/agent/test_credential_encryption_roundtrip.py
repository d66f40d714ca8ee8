"""For any credential value and metadata, storing then retrieving yields the original:
through SecureStorage alone, and end to end through a running agent."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.crypto import SecureStorage, generate_key
from client import errors
from support import AgentProcess

# any Unicode a msgpack str can carry (no lone surrogates), short and long
values = st.text(min_size=0, max_size=2000)
json_like = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=50),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
metadata = st.one_of(st.none(), st.just({}), st.dictionaries(st.text(max_size=20), json_like, max_size=5))

KEY = generate_key()


@given(value=st.text())
@settings(max_examples=300)
def test_secure_storage_round_trip(value: str) -> None:
    s = SecureStorage(KEY)
    token = s.encrypt(value)
    assert isinstance(token, bytes)
    assert s.decrypt(token) == value


@given(value=st.text(alphabet=st.characters(), min_size=1))
@settings(max_examples=100)
def test_secure_storage_with_surrogates_and_any_code_point(value: str) -> None:
    s = SecureStorage(KEY)
    assert s.decrypt(s.encrypt(value)) == value


def test_secure_storage_rejects_a_foreign_key_and_tampering() -> None:
    token = SecureStorage(KEY).encrypt("hf_secret")
    with pytest.raises(errors.IntegrityError):
        SecureStorage(generate_key()).decrypt(token)
    tampered = bytearray(token)
    tampered[20] ^= 1
    with pytest.raises(errors.IntegrityError):
        SecureStorage(KEY).decrypt(bytes(tampered))
    assert "hf_secret" not in repr(SecureStorage(KEY))
    with pytest.raises(errors.BadRequest):
        SecureStorage(b"not a key")


@pytest.fixture(scope="module")
def live_agent() -> Iterator[AgentProcess]:
    a = AgentProcess().start()
    a.init_passphrase()
    yield a
    a.cleanup()


@given(value=values, meta=metadata, platform=st.sampled_from(["runpod", "custom", "x-y_z"]),
       ctype=st.sampled_from(["api-key", "token", "secret_2"]))
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_agent_round_trip(live_agent: AgentProcess, value: str, meta: dict[str, Any] | None,
                          platform: str, ctype: str) -> None:
    with live_agent.client() as c:
        c.store(platform, value, ctype, meta, validate=False)
        assert c.get(platform, ctype) == value
        assert c.metadata(platform, ctype)["metadata"] == (meta or {})


def test_agent_round_trip_survives_lock_and_restart(live_agent: AgentProcess) -> None:
    value = "ключ-🔑-\u0000-\U0010ffff-" + "x" * 10000
    with live_agent.client() as c:
        c.store("unicode", value, metadata={"note": "ü"}, validate=False)
        c.lock()
        c.unlock("correct horse battery staple")
        assert c.get("unicode") == value
    live_agent.stop()
    live_agent.start()
    with live_agent.client() as c:
        c.unlock("correct horse battery staple")
        assert c.get("unicode") == value
        assert c.metadata("unicode")["metadata"] == {"note": "ü"}
