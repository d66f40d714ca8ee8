"""The original ``SecureStorage`` served by a real agent: the ``encrypt`` and ``decrypt`` ops."""

from __future__ import annotations

import asyncio
import base64
import inspect
import socket
from pathlib import Path
from typing import Any

import msgpack
import pytest

import client
from agent import crypto
from client import errors, protocol
from support import PASSPHRASE, AgentProcess, raw_request, vault_store

SAMPLES = [
    "",
    "plain ascii",
    "héllo wörld ✓ 🔑 日本語 \u202eRTL\u202c e\u0301",  # astral, combining, bidi
    "nul\x00 and newlines\n\r\ttabs",
    "x" * 10_000,
    "€" * 3_400,  # 10 KB of three-byte characters
]


@pytest.fixture
def storage(unlocked_agent: AgentProcess, monkeypatch: pytest.MonkeyPatch) -> client.SecureStorage:
    """``SecureStorage()`` with no arguments, finding the agent as any program would."""
    monkeypatch.setenv("CREDENTIAL_AGENT_SOCK", str(unlocked_agent.socket))
    return client.SecureStorage()


def send_raw_request(path: Path, op: str, args: dict[str, Any]) -> Any:
    """One request as raw bytes (types the typed clients would not send), its reply decoded."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(20)
        s.connect(str(path))
        s.sendall(raw_request(op, args))
        head = s.recv(4, socket.MSG_WAITALL)
        return msgpack.unpackb(s.recv(int.from_bytes(head, "big"), socket.MSG_WAITALL), raw=False)


def _master_key(a: AgentProcess) -> bytes:
    with vault_store(a.home) as store:
        meta = store.meta()
    salt, n, r, p = msgpack.unpackb(meta["kdf"])
    return crypto.unwrap_key(meta["wrapped_key"], PASSPHRASE, crypto.KdfParams(salt, n, r, p))


def _data_key(a: AgentProcess, master: bytes) -> bytes:
    with vault_store(a.home) as store:
        sealed = store.meta()[crypto.DATA_KEY]
    return crypto.unseal(crypto.SecureStorage(master), "", "", "data-key", sealed)  # type: ignore[no-any-return]


@pytest.mark.parametrize("text", SAMPLES, ids=range(len(SAMPLES)))
def test_round_trips(storage: client.SecureStorage, text: str) -> None:
    token = storage.encrypt(text)
    assert isinstance(token, bytes) and token
    assert storage.decrypt(token) == text
    assert storage.decrypt(token.decode()) == text  # a token kept as text works too
    assert storage.encrypt(text) != token  # Fernet: a fresh IV each time


def test_the_original_import_and_signature() -> None:
    from client import SecureStorage

    assert SecureStorage is client.SecureStorage
    params = list(inspect.signature(SecureStorage).parameters.values())
    assert all(p.default is not inspect.Parameter.empty for p in params)  # no argument is needed
    assert list(inspect.signature(SecureStorage.encrypt).parameters) == ["self", "data"]
    assert list(inspect.signature(SecureStorage.decrypt).parameters) == ["self", "encrypted"]
    assert issubclass(errors.InvalidToken, client.AgentError) and client.InvalidToken is errors.InvalidToken


async def test_the_async_client_has_both_ops(unlocked_agent: AgentProcess) -> None:
    async with client.AsyncClient(unlocked_agent.socket, autostart=False) as c:
        token = await c.encrypt("async ✓")
        assert await c.decrypt(token) == "async ✓"
    with unlocked_agent.client() as c:
        assert c.decrypt(token) == "async ✓"


async def test_concurrent_first_calls_make_one_data_key(unlocked_agent: AgentProcess) -> None:
    clients = [client.AsyncClient(unlocked_agent.socket, autostart=False) for _ in range(6)]
    try:
        tokens = await asyncio.gather(*(c.encrypt(f"v{i}") for i, c in enumerate(clients)))
    finally:
        for c in clients:
            await c.aclose()
    with unlocked_agent.client() as c:
        assert [c.decrypt(t) for t in tokens] == [f"v{i}" for i in range(6)]


def test_a_token_of_another_vault_is_refused(storage: client.SecureStorage) -> None:
    token = storage.encrypt("the secret of vault A")
    other = AgentProcess().start()
    try:
        other.init_passphrase()
        with other.client() as c:
            with pytest.raises(errors.InvalidToken) as fresh:  # B has never made a token
                c.decrypt(token)
            c.encrypt("B's own")
            with pytest.raises(errors.InvalidToken) as info:  # nor does its own key open it
                c.decrypt(token)
            assert c.get_many([]) == []  # and it keeps serving
        for e in (fresh.value, info.value):
            assert "secret" not in e.message and token.decode() not in e.message
            assert isinstance(e, ValueError)
        assert "not made by this vault" in info.value.message
    finally:
        other.cleanup()


@pytest.mark.parametrize("how", ["flip", "truncate", "append", "garbage", "empty"])
def test_a_tampered_token_is_refused(storage: client.SecureStorage, how: str) -> None:
    token = bytearray(storage.encrypt("tamper with me"))
    if how == "flip":
        raw = bytearray(base64.urlsafe_b64decode(bytes(token)))
        raw[40] ^= 0x01
        token = bytearray(base64.urlsafe_b64encode(bytes(raw)))
    elif how == "truncate":
        token = token[:-8]
    elif how == "append":
        token += b"AAAA"
    elif how == "garbage":
        token = bytearray(b"\xff\x00 not base64 at all")
    else:
        token = bytearray()
    with pytest.raises(errors.InvalidToken) as info:
        storage.decrypt(bytes(token))
    assert "tamper with me" not in info.value.message
    assert storage.decrypt(storage.encrypt("still serving")) == "still serving"


def test_vault_rows_and_tokens_never_open_as_each_other(unlocked_agent: AgentProcess) -> None:
    """The purpose binding: a stored value's token, and the key check, are no
    SecureStorage tokens, even if they were under the same key."""
    a = unlocked_agent
    with a.client() as c:
        c.store("runpod", "r" * 30)
        token = c.encrypt("r" * 30)
        with vault_store(a.home) as store:
            (row,) = store.rows()
            key_check = store.meta()["key_check"]
        for sealed in (row.value, row.metadata, key_check):
            with pytest.raises(errors.InvalidToken):
                c.decrypt(sealed)
    master = crypto.SecureStorage(_master_key(a))
    data = crypto.SecureStorage(_data_key(a, _master_key(a)))
    with pytest.raises(errors.IntegrityError):  # under the master key it is nothing
        crypto.unseal(master, "runpod", "api-key", "value", token)
    with pytest.raises(errors.IntegrityError):  # under its own key it is still not a row
        crypto.unseal(data, "runpod", "api-key", "value", token)
    # the binding, not only the key, refuses: a row-shaped token under the data key itself
    with a.client() as c:
        with pytest.raises(errors.InvalidToken):
            c.decrypt(crypto.seal(data, "runpod", "api-key", "value", "r" * 30))
        assert c.decrypt(crypto.encrypt_data(data, "bound as data")) == "bound as data"


def test_locked_raises_locked(unlocked_agent: AgentProcess) -> None:
    with unlocked_agent.client() as c:
        token = c.encrypt("made while unlocked")
        c.lock()
        with pytest.raises(client.Locked):
            c.encrypt("anything")
        with pytest.raises(client.Locked):
            c.decrypt(token)
        c.unlock(PASSPHRASE)
        assert c.decrypt(token) == "made while unlocked"


def test_tokens_survive_a_restart_and_a_key_rotation(unlocked_agent: AgentProcess) -> None:
    a = unlocked_agent
    with a.client() as c:
        token = c.encrypt("kept across rotations")
        c.rotate_key(PASSPHRASE)
        assert c.decrypt(token) == "kept across rotations"
        c.rotate_key(PASSPHRASE, "a new passphrase")
    a.stop()
    a.start()
    with a.client(timeout=30) as c:
        c.unlock("a new passphrase")
        assert c.decrypt(token) == "kept across rotations"
        assert c.decrypt(c.encrypt("after")) == "after"


def test_sizes_are_bounded_by_the_protocol(storage: client.SecureStorage) -> None:
    largest = "é" * (protocol.MAX_VALUE // 2)  # MAX_VALUE bytes of UTF-8
    token = storage.encrypt(largest)
    assert len(token) <= protocol.MAX_TOKEN
    assert storage.decrypt(token) == largest
    with pytest.raises(errors.BadRequest, match="at most 65536 bytes"):
        storage.encrypt(largest + "x")
    with pytest.raises(errors.BadRequest, match="token is at most"):
        storage.decrypt(b"A" * (protocol.MAX_TOKEN + 1))
    assert storage.decrypt(storage.encrypt("small")) == "small"


def test_wrong_argument_types_are_a_clear_error(unlocked_agent: AgentProcess) -> None:
    reply = send_raw_request(unlocked_agent.socket, "decrypt", {"token": 7})
    assert reply["error"] == {"code": "bad_request", "message": "argument 'token' must be binary"}
    reply = send_raw_request(unlocked_agent.socket, "encrypt", {"data": b"bytes"})
    assert reply["error"]["code"] == "bad_request"
    with unlocked_agent.client() as c:
        assert c.decrypt(c.encrypt("ok")) == "ok"


def test_audited_without_values_and_no_key_or_text_in_the_log(unlocked_agent: AgentProcess) -> None:
    a = unlocked_agent
    marker = "PLAINTEXT-CANARY-7c1f"
    with a.client() as c:
        token = c.encrypt(marker)
        assert c.decrypt(token) == marker
        with pytest.raises(errors.InvalidToken):
            c.decrypt(token[:-4])
        rows = [r for r in c.audit() if r["op"] in ("encrypt", "decrypt")]
    assert [(r["op"], r["result"]) for r in rows] == [("encrypt", "ok"), ("decrypt", "ok"),
                                                       ("decrypt", "invalid_token")]
    assert all(r["platform"] is None for r in rows)
    assert marker not in repr(rows)
    master = _master_key(a)
    data_key = _data_key(a, master)
    a.stop()
    log = a.log()
    assert "op decrypt -> invalid_token" in log  # the debug log saw the traffic
    for secret in (marker, master.decode(), data_key.decode(), token.decode()):
        assert secret not in log
    for path in a.home.rglob("*"):  # the vault and everything else the agent wrote
        if path.is_file():
            assert marker.encode() not in path.read_bytes(), path


def test_a_keystore_vault_unlocks_itself_for_decrypt(keyring_agent: AgentProcess) -> None:
    """gpg-agent style, as for `get`: a restarted agent on a keystore vault needs no `unlock`."""
    a = keyring_agent
    with a.client(timeout=30) as c:
        c.init("keyring")
        token = c.encrypt("through the keystore")
    a.stop()
    a.start()
    with a.client(timeout=30) as c:
        assert c.status()["locked"] is True
        assert c.decrypt(token) == "through the keystore"
