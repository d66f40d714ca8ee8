"""The access audit log against a real agent: who read what, never a value, bounded."""

from __future__ import annotations

import json
import os
import sqlite3
import time

import pytest

from agent.audit import FLUSH_INTERVAL, NAMED_PER_CALLER
from client import errors
from support import AgentProcess, connect, raw_request, read_reply, vault_store

CANARY = "rp_CANARY_9f8e7d6c5b4a39281706"


def audit_json(a: AgentProcess, *args: str) -> list[dict]:
    done = a.cli("audit", "--json", *args)
    assert done.returncode == 0, done.stderr
    assert CANARY not in done.stdout
    return json.loads(done.stdout)


def vault_file(a: AgentProcess):
    return a.home / "data" / "credential-agent" / "vault.sqlite3"


def test_reads_and_changes_are_recorded_with_the_caller(unlocked_agent: AgentProcess) -> None:
    a = unlocked_agent
    with a.client() as c:
        c.store("runpod", CANARY)
        assert c.get("runpod") == CANARY
        with pytest.raises(errors.NotFound):
            c.get("vastai")
        c.metadata("runpod")
        c.delete("runpod")
        c.list()  # names only: not recorded
    rows = audit_json(a)
    ops = [(r["op"], r["platform"], r["result"]) for r in rows]
    assert ops == [("init", None, "ok"), ("store", "runpod", "ok"), ("get", "runpod", "ok"),
                   ("get", "vastai", "not_found"), ("metadata", "runpod", "ok"), ("delete", "runpod", "ok")]
    mine = rows[2]
    assert mine["pid"] == os.getpid() and mine["uid"] == os.getuid()
    assert mine["credential_type"] == "api-key"
    assert mine["exe"] == os.path.realpath(f"/proc/{os.getpid()}/exe")
    assert abs(mine["time"] - time.time()) < 60
    # the CLI's own table names the command's process and never a value
    table = a.cli("audit")
    assert table.returncode == 0 and "runpod/api-key" in table.stdout and "not_found" in table.stdout
    assert CANARY not in table.stdout


def test_no_value_reaches_the_vault_audit_table(unlocked_agent: AgentProcess) -> None:
    a = unlocked_agent
    with a.client() as c:
        c.store("runpod", CANARY)
        for _ in range(5):
            c.get("runpod")
        # a confused caller passing a secret as the platform name: stored as <invalid>
        with pytest.raises(errors.BadRequest):
            c.get(CANARY + " ")
    rows = audit_json(a)
    assert rows[-1]["platform"] == "<invalid>" and rows[-1]["result"] == "bad_request"
    db = sqlite3.connect(vault_file(a))
    dump = "\n".join(db.iterdump())
    db.close()
    assert "INSERT INTO \"audit\"" in dump and CANARY not in dump


def test_repeated_events_become_one_row_with_a_count(unlocked_agent: AgentProcess) -> None:
    a = unlocked_agent
    with a.client() as c:
        c.store("runpod", "r" * 25)
        t0 = time.time()
        c.get_many(["runpod"] * 500)
        c.get("runpod")
        rows = [r for r in c.call("audit") if r["op"] == "get"]
    assert len(rows) == 1 and rows[0]["count"] == 501
    assert t0 - 1 <= rows[0]["time"] <= rows[0]["last_time"] <= time.time() + 1
    assert " 501 " in a.cli("audit").stdout


def test_a_flood_of_failed_lookups_is_one_row_and_pushes_no_history_out(unlocked_agent: AgentProcess) -> None:
    """10,000 gets of names that are not there, from one caller: one row a batch that
    counts them (named ``*``), and the history before it is all still there."""
    a = unlocked_agent
    with a.client(timeout=120) as c:
        c.store("runpod", "r" * 25)
        c.get("runpod")
        before = c.audit()
        for start in range(0, 10_000, 2_000):  # pipelined, in batches a socket buffer holds
            replies = c.call_many([("get", {"platform": f"guess{i}"}) for i in range(start, start + 2_000)])
            assert all(isinstance(r, errors.NotFound) for r in replies)
        rows = c.audit(limit=10_000)
    flood = [r for r in rows if r["op"] == "get" and r["result"] == "not_found"]
    assert sum(r["count"] for r in flood) == 10_000
    assert len(flood) <= 20 and all(r["platform"] == "*" for r in flood)  # a row a batch, not a row a guess
    assert rows[: len(before)] == before
    assert "(several names)" in a.cli("audit").stdout


def test_a_program_reading_thousands_of_keys_costs_a_few_rows_a_batch(unlocked_agent: AgentProcess) -> None:
    """An export-like burst of distinct successful reads: each of the first NAMED_PER_CALLER
    names keeps its own row, the rest of the batch is one counted row of several names."""
    a = unlocked_agent
    with a.client(timeout=120) as c:
        for start in range(0, 3_000, 500):
            c.call_many([("store", {"platform": f"key{i}", "value": "v", "validate": False})
                         for i in range(start, start + 500)])
        replies = c.call_many([("get", {"platform": f"key{i}"}) for i in range(3_000)])
        assert replies == ["v"] * 3_000
        rows = c.audit(limit=10_000)
    reads = [r for r in rows if r["op"] == "get" and r["result"] == "ok"]
    assert sum(r["count"] for r in reads) == 3_000  # every read is counted
    batches = sum(1 for r in reads if r["platform"] == "*")
    assert batches >= 1 and len(reads) <= batches * (NAMED_PER_CALLER + 1)  # not a row per key
    named = [r["platform"] for r in reads if r["platform"] != "*"]
    assert "key0" in named and len(named) <= batches * NAMED_PER_CALLER


def test_filters_since_and_platform(unlocked_agent: AgentProcess) -> None:
    a = unlocked_agent
    with a.client() as c:
        c.store("runpod", "r" * 25)
        c.store("wandb", "w" * 40)
        c.get("wandb")
    assert {r["platform"] for r in audit_json(a, "--platform", "wandb")} == {"wandb"}
    assert len(audit_json(a, "--platform", "wandb")) == 2
    assert len(audit_json(a, "--since", "1h")) == 4  # init + 3
    with a.client() as c:
        old = c.call("audit", {"since": time.time() + 3600})
    assert old == []
    assert a.cli("audit", "--since", "yesterday").returncode == 2


def test_rows_are_flushed_in_batches_and_at_shutdown(unlocked_agent: AgentProcess) -> None:
    a = unlocked_agent
    with a.client() as c:
        c.store("runpod", "r" * 25)
        for _ in range(3):
            c.get("runpod")
    a.stop()  # within the flush interval: the rows are still in memory
    with vault_store(a.home) as store:
        count = sum(r[8] for r in store.audit(None, None, 1000) if r[1] == "get")
    assert count == 3


def test_periodic_flush_without_a_reader(unlocked_agent: AgentProcess) -> None:
    a = unlocked_agent
    with a.client() as c:
        c.store("runpod", "r" * 25)
    deadline = time.monotonic() + FLUSH_INTERVAL + 10
    while time.monotonic() < deadline:
        with vault_store(a.home) as store:
            n = sum(1 for r in store.audit(None, None, 1000) if r[1] == "store")
        if n == 1:
            return
        time.sleep(0.1)
    pytest.fail("the audit row was not written within the flush interval")


def test_the_log_is_bounded_to_the_newest_rows() -> None:
    a = AgentProcess(env={"CREDENTIAL_AGENT_AUDIT_KEEP": "50"}).start()
    try:
        a.init_passphrase()
        with a.client() as c:
            c.store("runpod", "r" * 25)
            # 120 distinct events (failed lookups would be one row: they are counted per caller)
            results = c.call_many(
                [("store", {"platform": f"p{i}", "value": "v" * 25, "validate": False}) for i in range(120)]
            )
            assert not any(isinstance(r, errors.AgentError) for r in results)
            rows = c.call("audit", {"limit": 1000})
            c.store("wandb", "w" * 40)
            newest = c.call("audit", {"limit": 1000})
        assert [r["platform"] for r in rows] == [f"p{i}" for i in range(70, 120)]  # the newest 50
        assert len(newest) == 50 and newest[-1]["platform"] == "wandb" and newest[0]["platform"] == "p71"
    finally:
        a.cleanup()


def test_audit_keep_zero_turns_it_off() -> None:
    a = AgentProcess(env={"CREDENTIAL_AGENT_AUDIT_KEEP": "0"}).start()
    try:
        a.init_passphrase()
        with a.client() as c:
            c.store("runpod", "r" * 25)
            c.get("runpod")
            assert c.call("audit") == []
    finally:
        a.cleanup()


def test_audit_bad_arguments_get_errors_and_the_agent_serves_on(unlocked_agent: AgentProcess) -> None:
    s = connect(unlocked_agent)
    try:
        for args in ({"limit": 0}, {"limit": "x"}, {"since": "x"}, {"platform": 5}):
            s.sendall(raw_request("audit", args))
            reply = read_reply(s)
            assert reply["ok"] is False and reply["error"]["code"] == "bad_request"
    finally:
        s.close()
    with unlocked_agent.client() as c:
        assert c.call("audit", {"limit": 1})[0]["op"] == "init"


@pytest.mark.parametrize("args", [{"limit": 0}, {"limit": 2**63}, {"limit": -1}, {"since": 2**64 - 1},
                                  {"since": float("nan")}, {"since": float("inf")}, {"since": -5}])
def test_out_of_range_audit_arguments_are_bad_requests(unlocked_agent: AgentProcess, args: dict) -> None:
    with unlocked_agent.client() as c:
        with pytest.raises(errors.BadRequest):
            c.call("audit", args)
        assert c.call("audit", {"limit": 5}) is not None  # still serving
    assert "Traceback" not in unlocked_agent.log()


def test_audit_reply_is_trimmed_to_one_frame(unlocked_agent: AgentProcess) -> None:
    n = 1200  # ~280 bytes a row: more than one frame holds
    with unlocked_agent.client(timeout=60) as c:
        names = [(f"p{i:04}-" + "x" * 58, "t" + "y" * 62) for i in range(n)]  # distinct: no grouping
        c.call_many([("store", {"platform": p, "credential_type": t, "value": "v", "validate": False})
                     for p, t in names])
        rows = c.call("audit", {"limit": 10_000})
    assert 0 < len(rows) < n  # trimmed to fit, not an internal error
    assert rows[-1]["platform"] == names[-1][0]  # the newest are kept
