"""The contract every kind of remote keeps (``agent.remotes``), as keyring's BackendBasicTests:
read-through, local shadowing, write-through, a concurrent change as ``Conflict``, a
rotation seen on refresh, cached values up to ``max_stale`` while the remote does not
answer, refusal after a denial, a lock dropping everything, and the sealed offline cache
(a restart, a lock, a key rotation; gone after a denial).

A kind subclasses ``RemoteContract`` in a few lines: a class-scoped ``upstream`` fixture
(its server, shared by the class's tests), and how to start an agent on it (``start``),
write a secret upstream (``put``), read one (``current``) and refuse an agent (``deny``).
Every agent reaches its remote through a ``Relay`` on loopback, cut to make the remote
unreachable while the server goes on serving the other tests.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from client import errors
from support import PASSPHRASE, AgentProcess, until
from support.openbao import Relay

_names = itertools.count(1)


def value(tag: str) -> str:
    return f"{tag}-" + "v" * 30


class RemoteContract:
    """Subclasses define the ``upstream`` fixture (scope="class") and the four methods below."""

    @pytest.fixture(scope="class")
    @classmethod
    def upstream(cls) -> Iterator[Any]:
        raise NotImplementedError

    def start(self, upstream: Any, url: str, **options: Any) -> AgentProcess:
        """An agent (vault made, unlocked) whose remote ``team`` is reached at ``url``, signed in."""
        raise NotImplementedError

    def url(self, upstream: Any) -> str:
        """The server's address, behind which a relay is put."""
        raise NotImplementedError

    def put(self, upstream: Any, platform: str, values: dict[str, str]) -> None:
        raise NotImplementedError

    def current(self, upstream: Any, platform: str) -> dict[str, str]:
        raise NotImplementedError

    def deny(self, upstream: Any, agent: AgentProcess) -> None:
        """From now on the remote refuses this agent's credentials (a revoked token, AccessDenied)."""
        raise NotImplementedError

    # --- the suite's plumbing ---------------------------------------------------------------
    @pytest.fixture
    def agent(self, upstream: Any) -> Iterator[Any]:
        """``agent(**options)``: (agent, relay) on ``upstream``; both stopped after the test."""
        made: list[tuple[AgentProcess, Relay]] = []

        def make(**options: Any) -> tuple[AgentProcess, Relay]:
            relay = Relay(self.url(upstream))
            a = self.start(upstream, relay.url, **options)
            made.append((a, relay))
            return a, relay

        yield make
        for a, relay in made:
            relay.cut()
            a.cleanup()

    @staticmethod
    def name() -> str:
        return f"kind{next(_names)}"

    @staticmethod
    def status(a: AgentProcess) -> dict[str, Any]:
        with a.client() as c:
            return dict(c.remote_status()[0])

    @staticmethod
    def restart(a: AgentProcess, crash: bool = False) -> None:
        """Stop ``a`` (``crash``: SIGKILL, nothing written on the way out), start it, unlock it."""
        if crash:
            a.kill()
        else:
            a.stop()
        a.start()
        with a.client() as c:
            c.unlock(PASSPHRASE)

    # --- the contract -----------------------------------------------------------------------
    def test_read_through_with_its_source(self, upstream: Any, agent: Any) -> None:
        p = self.name()
        self.put(upstream, p, {"api-key": value("a")})
        a, _ = agent(refresh=3600)
        with a.client() as c:
            assert c.get(p) == value("a")
            [entry] = [e for e in c.list() if e["platform"] == p]
            assert entry["source"] == "team"

    def test_a_local_key_shadows_the_remote(self, upstream: Any, agent: Any) -> None:
        p = self.name()
        self.put(upstream, p, {"api-key": value("team")})
        a, _ = agent(refresh=3600)
        with a.client() as c:
            c.store(p, value("mine"))
            assert c.get(p) == value("mine")
            assert [e["source"] for e in c.list() if e["platform"] == p] == ["local"]

    def test_write_through_and_a_concurrent_change_is_a_conflict(self, upstream: Any, agent: Any) -> None:
        p = self.name()
        a, _ = agent(refresh=3600)
        with a.client() as c:
            c.store(p, value("w1"), remote="team")
            assert self.current(upstream, p) == {"api-key": value("w1")}
            assert c.get(p) == value("w1")
            self.put(upstream, p, {"api-key": value("other")})  # someone else, unseen by this agent
            with pytest.raises(errors.Conflict):
                c.store(p, value("w2"), remote="team")
            assert self.current(upstream, p) == {"api-key": value("other")}  # nothing overwritten
            assert c.get(p) == value("other")  # read again after the conflict
            c.store(p, value("w3"), remote="team")
            assert self.current(upstream, p) == {"api-key": value("w3")}

    def test_a_rotation_upstream_is_seen_on_refresh(self, upstream: Any, agent: Any) -> None:
        p = self.name()
        self.put(upstream, p, {"api-key": value("r1")})
        a, _ = agent(refresh=1)
        with a.client() as c:
            assert c.get(p) == value("r1")
            self.put(upstream, p, {"api-key": value("r2")})
            until(lambda: c.get(p) == value("r2"), 30, "the rotation seen")

    def test_a_key_in_use_is_polled_between_listings(self, upstream: Any, agent: Any) -> None:
        """``poll``: the keys in use are checked (their metadata, one request each) between the
        listings, which come every ``refresh``: a rotation is seen within ``poll``."""
        p = self.name()
        self.put(upstream, p, {"api-key": value("p1")})
        a, _ = agent(refresh=3600, poll=1)
        with a.client() as c:
            assert c.get(p) == value("p1")
            self.put(upstream, p, {"api-key": value("p2")})
            until(lambda: c.get(p) == value("p2"), 30, "the rotation seen by a poll")
            seen = self.status(a)["refreshes"]
            status = until(lambda: (s := self.status(a))["refreshes"] > seen + 1 and s, 30, "a poll with no change")
        assert status["listings"] == 1 and status["used_secrets"] == 1, status
        assert status["last_refresh_requests"] == 1, status  # the metadata of the one key in use

    def test_unreachable_served_up_to_max_stale(self, upstream: Any, agent: Any) -> None:
        p = self.name()
        self.put(upstream, p, {"api-key": value("s")})
        lasting, relay1 = agent(refresh=3600, max_stale="1h")
        short, relay2 = agent(refresh=3600, max_stale="2s")
        for a in (lasting, short):
            with a.client() as c:
                assert c.get(p) == value("s")
        relay1.cut()
        relay2.cut()
        with lasting.client() as c:
            assert c.get(p) == value("s")
        with short.client() as c:

            def refused() -> bool:
                try:
                    c.get(p)
                except errors.RemoteUnavailable as e:
                    assert value("s") not in e.message
                    return "past max_stale" in e.message
                return False

            until(refused, 30, "the copy refused past max_stale")

    def test_refused_after_a_denial(self, upstream: Any, agent: Any) -> None:
        p = self.name()
        self.put(upstream, p, {"api-key": value("d")})
        a, _ = agent(refresh=1, denied_grace="0")
        with a.client() as c:
            assert c.get(p) == value("d")
            self.deny(upstream, a)
            until(lambda: self.status(a)["token_denied_s"] is not None, 30, "the denial seen")
            with pytest.raises(errors.RemoteDenied):
                c.get(p)

    def test_a_lock_drops_everything(self, upstream: Any, agent: Any) -> None:
        p = self.name()
        self.put(upstream, p, {"api-key": value("l")})
        a, _ = agent(refresh=3600)
        with a.client() as c:
            assert c.get(p) == value("l")
            c.lock()
            with pytest.raises(errors.Locked):
                c.get(p)
            status = c.remote_status()[0]
            assert status["cached_secrets"] == 0 and not status["logged_in"]

    # --- the sealed offline cache -------------------------------------------------------------
    def _cached_offline(self, a: AgentProcess, p: str) -> None:
        with a.client() as c:
            assert c.get(p) == value("o")
        until(lambda: self.status(a)["offline_cache_stored"], 30, "the offline cache written")

    def test_the_offline_cache_serves_after_a_restart_and_a_lock(self, upstream: Any, agent: Any) -> None:
        p = self.name()
        self.put(upstream, p, {"api-key": value("o")})
        a, relay = agent(refresh=3600, max_stale="1h")
        self._cached_offline(a, p)
        relay.cut()  # a laptop on a train
        cut = time.monotonic()
        self.restart(a)
        with a.client() as c:
            assert c.get(p) == value("o")
            c.lock()
            c.unlock(PASSPHRASE)
            assert c.get(p) == value("o")
            elapsed = time.monotonic() - cut
            status = c.remote_status()[0]
        # its age runs from the remote's last confirmation (before the cut), not from the restart
        assert status["offline_secrets"] == 1 and status["offline_age_s"] >= elapsed, status
        shown = a.cli("remote", "status")
        assert shown.returncode == 0 and "offline cache: 1 values served from it" in shown.stdout, shown.stdout
        assert not any(value("o").encode() in f.read_bytes() for f in Path(a.home).rglob("*") if f.is_file())

    def test_the_offline_cache_is_refused_past_max_stale(self, upstream: Any, agent: Any) -> None:
        p = self.name()
        self.put(upstream, p, {"api-key": value("o")})
        a, relay = agent(refresh=3600, max_stale="3s")
        self._cached_offline(a, p)
        relay.cut()
        self.restart(a)
        with a.client() as c:

            def refused() -> str:
                try:
                    c.get(p)
                except errors.RemoteUnavailable as e:
                    return e.message
                return ""

            message = until(refused, 30, "the restored copy refused past max_stale")
        assert f"cached copy of {p} is" in message and "past max_stale (3 s)" in message, message

    def test_the_offline_cache_survives_a_key_rotation_and_a_crash(self, upstream: Any, agent: Any) -> None:
        p = self.name()
        self.put(upstream, p, {"api-key": value("o")})
        a, relay = agent(refresh=3600, max_stale="1h")
        self._cached_offline(a, p)
        with a.client() as c:
            c.rotate_key(PASSPHRASE)
        relay.cut()
        self.restart(a, crash=True)
        with a.client() as c:
            assert c.get(p) == value("o")

    def test_the_offline_cache_is_gone_after_a_denial(self, upstream: Any, agent: Any) -> None:
        p = self.name()
        self.put(upstream, p, {"api-key": value("o")})
        a, relay = agent(refresh=1, denied_grace="0", max_stale="1h")
        self._cached_offline(a, p)
        self.deny(upstream, a)
        until(lambda: not self.status(a)["offline_cache_stored"], 30, "the offline cache deleted")
        relay.cut()
        self.restart(a)
        with a.client() as c, pytest.raises(errors.AgentError) as info:
            c.get(p)
        assert not isinstance(info.value, errors.Locked)
