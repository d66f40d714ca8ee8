"""What every client of the agent must do, as one suite each client subclasses
(keyring's ``BackendBasicTests``): store, read, list and delete credentials, lock
and unlock, init, audit, rotate the key, raise the typed errors, time out, and
carry on across an agent restart. Always against real ``agent serve`` processes.

A subclass says how to make its client, in blocking form::

    class TestClient(ClientContract):
        def connect(self, path: Path, **kw: Any) -> Any:
            return Client(path, autostart=False, **kw)

An asyncio client is made blocking with ``Blocking`` (each call runs its coroutine
to completion on the adapter's own event loop).
"""

from __future__ import annotations

import asyncio
import inspect
import os
import signal
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from client import errors, protocol
from support import PASSPHRASE, TRANSPORT, AgentProcess, short_tmpdir

unix_only = pytest.mark.skipif(TRANSPORT != "unix", reason="a Unix socket or SIGSTOP: not on Windows, whose agent "
                               "listens on a named pipe (tests/agent/test_pipe.py covers its checks)")

RUNPOD = "rp_" + "r" * 30
WANDB = "w" * 40
HF = "hf_" + "h" * 34


class Blocking:
    """An asyncio client as a blocking one: coroutine methods run to completion on
    one event loop of the adapter's own; everything else passes through."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self._loop = asyncio.new_event_loop()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if not inspect.iscoroutinefunction(attr):
            return attr

        def run(*args: Any, **kwargs: Any) -> Any:
            return self._loop.run_until_complete(attr(*args, **kwargs))

        return run

    def close(self) -> None:
        if not self._loop.is_closed():
            self._loop.run_until_complete(self._client.aclose())
            self._loop.close()


class ClientContract:
    """The tests; a subclass supplies ``connect``. They run over the platform's transport
    (``support.TRANSPORT``: the Unix socket, or the Windows named pipe)."""

    def connect(self, path: Path, **kw: Any) -> Any:
        """A client of the agent at ``path``, with the blocking methods of ``client.Client``."""
        raise NotImplementedError

    # --- fixtures -------------------------------------------------------------------------
    @pytest.fixture
    def make(self) -> Iterator[Callable[..., Any]]:
        """``make(agent_or_path, **kw)``: a client, closed after the test."""
        made: list[Any] = []

        def make(where: AgentProcess | Path, **kw: Any) -> Any:
            kw.setdefault("timeout", 30)
            c = self.connect(where.socket if isinstance(where, AgentProcess) else where, **kw)
            made.append(c)
            return c

        yield make
        for c in made:
            c.close()

    @pytest.fixture(scope="class")
    @classmethod
    def shared_agent(cls) -> Iterator[AgentProcess]:
        a = AgentProcess().start()
        a.init_passphrase()
        yield a
        a.cleanup()

    @pytest.fixture
    def served(self, shared_agent: AgentProcess) -> AgentProcess:
        """The class's agent, unlocked and holding no credential."""
        with shared_agent.client(timeout=30) as c:
            c.unlock(PASSPHRASE)
            for e in c.list():
                c.delete(e["platform"], e["credential_type"])
        return shared_agent

    # --- what the agent is -----------------------------------------------------------------
    def test_hello_names_the_protocol_and_every_op(self, served: AgentProcess, make: Any) -> None:
        hello = make(served).hello()
        assert hello["protocol"] == protocol.PROTOCOL_VERSION
        assert set(protocol.OPS) <= set(hello["ops"])

    def test_status(self, served: AgentProcess, make: Any) -> None:
        st = make(served).status()
        assert st["initialized"] is True and st["locked"] is False and st["key_source"] == "passphrase"

    # --- credentials -----------------------------------------------------------------------
    def test_store_then_get(self, served: AgentProcess, make: Any) -> None:
        c = make(served)
        assert c.store("runpod", RUNPOD) is None
        c.store("runpod", "s3-" + "s" * 20, "s3-key", {"bucket": "ml"})
        assert c.get("runpod") == RUNPOD
        assert c.get("runpod", "s3-key") == "s3-" + "s" * 20

    def test_update_replaces_and_needs_an_existing_credential(self, served: AgentProcess, make: Any) -> None:
        c = make(served)
        with pytest.raises(errors.NotFound):
            c.update("runpod", RUNPOD)
        c.store("runpod", RUNPOD)
        c.update("runpod", "rp_" + "2" * 30, metadata={"rotated": True})
        assert c.get("runpod") == "rp_" + "2" * 30
        assert c.metadata("runpod")["metadata"] == {"rotated": True}

    def test_delete(self, served: AgentProcess, make: Any) -> None:
        c = make(served)
        c.store("runpod", RUNPOD)
        assert c.delete("runpod") is None
        with pytest.raises(errors.NotFound):
            c.get("runpod")
        with pytest.raises(errors.NotFound):
            c.delete("runpod")

    def test_list_and_metadata_never_carry_values(self, served: AgentProcess, make: Any) -> None:
        c = make(served)
        c.store("wandb", WANDB, metadata={"team": "ml"})
        c.store("runpod", RUNPOD, expires_at=time.time() + 3600)
        entries = c.list()
        assert [(e["platform"], e["credential_type"]) for e in entries] == [("runpod", "api-key"),
                                                                            ("wandb", "api-key")]
        meta = c.metadata("wandb")
        assert meta["platform"] == "wandb" and meta["metadata"] == {"team": "ml"}
        assert meta["created"] <= meta["updated"] and meta["expires_at"] is None
        assert c.metadata("runpod")["expires_at"] > time.time()
        assert WANDB not in repr(entries) + repr(meta) and RUNPOD not in repr(entries)

    def test_get_many_and_credentials_for(self, served: AgentProcess, make: Any) -> None:
        c = make(served)
        c.store("runpod", RUNPOD)
        c.store("runpod", "s3-" + "s" * 20, "s3-key")
        c.store("wandb", WANDB)
        assert c.get_many(["wandb", ("runpod", "s3-key"), "runpod"]) == [WANDB, "s3-" + "s" * 20, RUNPOD]
        assert c.get_many([]) == [] and c.call_many([]) == []
        with pytest.raises(errors.NotFound):
            c.get_many(["wandb", "nothing"])
        assert c.credentials_for("runpod") == {"api_key": RUNPOD, "s3_key": "s3-" + "s" * 20}
        with pytest.raises(errors.NotFound):
            c.credentials_for("nothing")

    def test_validate(self, served: AgentProcess, make: Any) -> None:
        c = make(served)
        assert c.validate("huggingface", HF) is True
        assert c.validate("huggingface", "not-a-token") is False

    def test_invalid_reason_says_why(self, served: AgentProcess, make: Any) -> None:
        c = make(served)
        assert c.invalid_reason("huggingface", HF) is None
        assert "hf_" in c.invalid_reason("huggingface", "not-a-token")

    def test_store_keeps_or_merges_and_put_says_whether_it_created(self, served: AgentProcess, make: Any) -> None:
        c = make(served)
        soon = time.time() + 3600
        assert c.put("runpod", RUNPOD, metadata={"team": "ml"}, expires_at=soon)["created"] is True
        assert c.put("runpod", RUNPOD, metadata={"owner": "ana"}, keep=True, merge=True)["created"] is False
        entry = c.metadata("runpod")
        assert entry["metadata"] == {"team": "ml", "owner": "ana"} and entry["expires_at"] == pytest.approx(soon)
        assert c.store("runpod", RUNPOD, keep=True) is None  # nothing given: metadata and expiry kept
        assert c.metadata("runpod")["metadata"] == {"team": "ml", "owner": "ana"}
        c.store("runpod", RUNPOD, metadata={"owner": "bo"}, keep=True, clear_expiry=True)  # no merge: replaced
        entry = c.metadata("runpod")
        assert entry["metadata"] == {"owner": "bo"} and entry["expires_at"] is None
        c.store("runpod", RUNPOD)  # without keep, a replaced credential's metadata goes
        assert not c.metadata("runpod")["metadata"]

    def test_expired_credentials_follow_on_expired(self, served: AgentProcess, make: Any) -> None:
        make(served).store("runpod", RUNPOD, expires_at=time.time() - 60)
        assert make(served).get("runpod") == RUNPOD  # warns
        with pytest.raises(errors.Expired):
            make(served, on_expired="refuse").get("runpod")

    # --- errors, typed ---------------------------------------------------------------------
    def test_errors_are_the_typed_classes(self, served: AgentProcess, make: Any) -> None:
        c = make(served)
        with pytest.raises(errors.NotFound) as nf:
            c.get("nothing")
        assert isinstance(nf.value, LookupError)
        with pytest.raises(errors.InvalidCredential):
            c.store("huggingface", "not-a-token")
        with pytest.raises(errors.BadRequest):
            c.store("no spaces allowed", RUNPOD)
        with pytest.raises(errors.UnknownOp):
            c.call("no_such_op")
        results = c.call_many([("get", {"platform": "nothing"}), ("hello", {})])
        assert isinstance(results[0], errors.NotFound) and results[1]["protocol"] == protocol.PROTOCOL_VERSION

    def test_no_agent_is_agent_unavailable(self, make: Any) -> None:
        d = short_tmpdir()
        try:
            with pytest.raises(errors.AgentUnavailable) as info:
                make(d / "agent.sock").hello()
            assert isinstance(info.value, ConnectionError)
        finally:
            d.rmdir()

    @unix_only
    def test_a_socket_others_can_use_is_refused(self, make: Any) -> None:
        d = short_tmpdir()
        path = d / "agent.sock"
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(str(path))
            listener.listen()
            os.chmod(path, 0o666)
            with pytest.raises(errors.UntrustedSocket):
                make(path).hello()
        finally:
            listener.close()
            path.unlink()
            d.rmdir()

    # --- lock state --------------------------------------------------------------------------
    def test_lock_and_unlock(self, served: AgentProcess, make: Any) -> None:
        c = make(served)
        c.store("runpod", RUNPOD)
        assert c.lock() is None
        assert c.status()["locked"] is True
        with pytest.raises(errors.Locked):
            c.get("runpod")
        assert [e["platform"] for e in c.list()] == ["runpod"]  # names only, while locked
        with pytest.raises(errors.BadPassphrase):
            c.unlock("wrong")
        assert c.unlock(PASSPHRASE) is None
        assert c.get("runpod") == RUNPOD

    def test_init(self, agent: AgentProcess, make: Any) -> None:
        c = make(agent)
        assert c.status()["initialized"] is False
        with pytest.raises(errors.NotInitialized):
            c.get("runpod")
        result = c.init("passphrase", PASSPHRASE)
        assert isinstance(result, dict)
        assert c.status()["initialized"] is True
        with pytest.raises(errors.AlreadyExists):
            c.init("passphrase", PASSPHRASE)
        c.store("runpod", RUNPOD)
        assert c.get("runpod") == RUNPOD

    def test_rotate_key(self, unlocked_agent: AgentProcess, make: Any) -> None:
        c = make(unlocked_agent)
        c.store("runpod", RUNPOD)
        c.store("wandb", WANDB)
        with pytest.raises(errors.BadPassphrase):
            c.rotate_key("wrong")
        result = c.rotate_key(PASSPHRASE, "a new passphrase")
        assert result["credentials"] == 2 and result["key_source"] == "passphrase"
        c.lock()
        with pytest.raises(errors.BadPassphrase):
            c.unlock(PASSPHRASE)
        c.unlock("a new passphrase")
        assert c.get_many(["runpod", "wandb"]) == [RUNPOD, WANDB]

    def test_audit(self, served: AgentProcess, make: Any) -> None:
        c = make(served)
        since = time.time() - 1
        c.store("runpod", RUNPOD)
        c.get("runpod")
        rows = c.audit(since=since, platform="runpod")
        assert [r["op"] for r in rows][-2:] == ["store", "get"]
        assert all(r["platform"] == "runpod" and r["pid"] == os.getpid() for r in rows)
        assert len(c.audit(limit=1)) == 1
        assert RUNPOD not in repr(c.audit())

    def test_stop(self, agent: AgentProcess, make: Any) -> None:
        assert make(agent).stop() is None
        assert agent.proc is not None and agent.proc.wait(15) == 0

    # --- time and restarts -------------------------------------------------------------------
    @unix_only
    def test_a_silent_agent_times_out_then_the_client_recovers(self, unlocked_agent: AgentProcess,
                                                               make: Any) -> None:
        c = make(unlocked_agent, timeout=0.5)
        c.store("runpod", RUNPOD)
        unlocked_agent.signal(signal.SIGSTOP)
        try:
            with pytest.raises(errors.AgentTimeout) as info:
                c.get("runpod")
            assert "within 0.5 s" in info.value.message  # its own timeout, not a longer one
        finally:
            unlocked_agent.signal(signal.SIGCONT)
        assert c.get("runpod") == RUNPOD  # on a new connection: the late reply is never read

    def test_the_same_client_carries_on_after_the_agent_restarts(self, unlocked_agent: AgentProcess,
                                                                 make: Any) -> None:
        c = make(unlocked_agent)
        c.store("runpod", RUNPOD)
        assert c.get("runpod") == RUNPOD  # connected
        assert unlocked_agent.stop() == 0
        unlocked_agent.start()
        c.unlock(PASSPHRASE)  # the old connection is dead: resent on a new one
        assert c.get("runpod") == RUNPOD
