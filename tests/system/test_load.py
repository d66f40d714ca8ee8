"""Load and crashes: many clients at once, then ``kill -9`` in the middle of writes.

The load test runs 32 threads in this process and 8 worker processes (4 threads
each) doing mixed store/get/update/delete on shared and private keys for a
bounded time (``CA_LOAD_SECONDS``, default 8). Afterwards the vault must equal a
model of the acknowledged operations, before and after a restart.
"""

from __future__ import annotations

import collections
import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from client import errors
from support import PASSPHRASE, AgentProcess, loadwork, until

LOAD_SECONDS = float(os.environ.get("CA_LOAD_SECONDS", "8"))
THREADS = 32
PROCESSES = 8
THREADS_PER_PROCESS = 4


def vault_file(a: AgentProcess) -> Path:
    return a.home / "data" / "credential-agent" / "vault.sqlite3"


def integrity(path: Path) -> str:
    db = sqlite3.connect(path)
    try:
        return str(db.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        db.close()


def replay_private(records: list[list[Any]]) -> dict[str, str]:
    """Replay one worker's private-key operations in order; every reply must fit the model."""
    model: dict[str, str] = {}
    for op, key, value, outcome, _t0, _t1 in sorted(records, key=lambda r: r[4]):
        present = key in model
        if op == "store":
            assert outcome == "ok"
            model[key] = value
        elif op == "update":
            assert (outcome == "ok") == present, (op, key, outcome)
            if present:
                model[key] = value
        elif op == "delete":
            assert (outcome == "ok") == present, (op, key, outcome)
            model.pop(key, None)
        else:
            assert (outcome == "ok") == present, (op, key, outcome)
            if present:
                assert value == model[key], f"get {key} returned a value other than the last write"
    return model


def possible_finals(records: list[list[Any]]) -> set[str | None]:
    """The states a shared key may end in: those of its acknowledged mutations that no
    other mutation provably follows (one that started after it ended)."""
    muts = [r for r in records if r[0] in ("store", "update", "delete") and r[3] == "ok"]
    if not muts:
        return {None}
    last = [m for m in muts if not any(x[4] > m[5] for x in muts)]
    return {m[2] if m[0] != "delete" else None for m in last}


def check_vault(a: AgentProcess, private: dict[str, str], shared: dict[str, set[str | None]]) -> None:
    with a.client(timeout=30) as c:
        listed = {e["platform"] for e in c.list()}
        expected_present = set(private) | {k for k, finals in shared.items() if None not in finals}
        maybe_present = {k for k, finals in shared.items() if None in finals and len(finals) > 1}
        assert expected_present <= listed <= expected_present | maybe_present
        for key, value in private.items():
            assert c.get(key) == value
        for key, finals in shared.items():
            try:
                actual: str | None = c.get(key)
            except errors.NotFound:
                actual = None
            assert actual in finals, f"{key}: {actual!r} is not a possible final state {finals}"


def test_mixed_load_matches_a_model_of_acknowledged_operations(
    unlocked_agent: AgentProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    a = unlocked_agent
    seed = int(time.time())
    start = time.monotonic()
    procs = [
        subprocess.Popen(
            [sys.executable, loadwork.__file__, str(a.socket), str(1000 + 10 * i),
             str(THREADS_PER_PROCESS), str(LOAD_SECONDS), str(seed)],
            env=a.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        for i in range(PROCESSES)
    ]
    records = loadwork.run_threads(a.socket, 0, THREADS, LOAD_SECONDS, seed)
    for p in procs:
        out, err = p.communicate(timeout=LOAD_SECONDS + 180)
        assert p.returncode == 0, err.decode()[-2000:]
        records += json.loads(out)
    elapsed = time.monotonic() - start

    unexpected = collections.Counter(r[3] for r in records if r[3].startswith("error:"))
    assert not unexpected, f"errors other than not_found: {unexpected}"

    by_key: dict[str, list[list[Any]]] = collections.defaultdict(list)
    for r in records:
        by_key[r[1]].append(r)
    private: dict[str, str] = {}
    shared: dict[str, set[str | None]] = {}
    for key, recs in by_key.items():
        if key in loadwork.SHARED:
            shared[key] = possible_finals(recs)
            written = {r[2] for r in recs if r[0] in ("store", "update") and r[3] == "ok"}
            for r in recs:
                if r[0] == "get" and r[3] == "ok":
                    assert r[2] in written, f"get {key} returned a value nobody wrote"
        else:
            private.update(replay_private(recs))
    for key in loadwork.SHARED:
        shared.setdefault(key, {None})

    check_vault(a, private, shared)
    # and the same after a clean restart: what was acknowledged is on disk
    assert a.stop() == 0
    assert integrity(vault_file(a)) == "ok"
    a.start()
    with a.client(timeout=60) as c:
        c.unlock(PASSPHRASE)
    check_vault(a, private, shared)

    kinds = collections.Counter(r[0] for r in records)
    with capsys.disabled():
        print(f"\nload: {len(records)} operations ({dict(kinds)}) by {THREADS} threads + {PROCESSES} processes x "
              f"{THREADS_PER_PROCESS} threads in {elapsed:.1f} s ({len(records) / elapsed:.0f} ops/s); "
              f"{len(private)} private + {len(shared)} shared keys matched the model")
    assert len(records) > 1000


# --- kill -9 during writes -------------------------------------------------------------------
class Writer(threading.Thread):
    """Stores new keys (each checkable on its own) and overwrites one hot key."""

    def __init__(self, a: AgentProcess, name: str) -> None:
        super().__init__(daemon=True)
        self.a, self.tag = a, name
        self.acked: dict[str, str] = {}
        self.in_flight: tuple[str, str] | None = None
        self.writes = 0

    def run(self) -> None:
        n = 0
        with self.a.client(timeout=30) as c:
            while True:
                n += 1
                key = f"{self.tag}hot" if n % 4 == 0 else f"{self.tag}n{n}"
                value = f"{self.tag}-{n}-durable"
                self.in_flight = (key, value)
                try:
                    c.store(key, value)
                except errors.AgentError:
                    return  # the agent is gone; in_flight may or may not have landed
                self.acked[key] = value
                self.writes += 1
                self.in_flight = None


def test_kill_9_loses_no_acknowledged_write(capsys: pytest.CaptureFixture[str]) -> None:
    a = AgentProcess()
    try:
        a.start()
        a.init_passphrase()
        checked = 0
        for rnd in range(2):
            writers = [Writer(a, f"r{rnd}t{i}") for i in range(8)]
            for w in writers:
                w.start()
            time.sleep(2.5)
            with a.client() as c:  # the writers' stores share transactions (group commit)
                assert c.status()["largest_write_group"] > 1
            a.kill()  # SIGKILL, mid-write
            for w in writers:
                w.join(60)
                assert not w.is_alive()
            assert integrity(vault_file(a)) == "ok"
            a.start()
            with a.client(timeout=60) as c:
                c.unlock(PASSPHRASE)
                for w in writers:
                    assert w.writes > 0
                    for key, value in w.acked.items():
                        got = c.get(key)
                        landed = w.in_flight is not None and w.in_flight == (key, got)
                        assert got == value or landed, f"acknowledged write of {key} lost"
                    checked += w.writes
                    if w.in_flight is not None and w.in_flight[0] not in w.acked:
                        try:  # an unacknowledged write is all or nothing
                            assert c.get(w.in_flight[0]) == w.in_flight[1]
                        except errors.NotFound:
                            pass
        with capsys.disabled():
            print(f"\nkill -9: {checked} acknowledged writes checked after 2 crashes; integrity_check ok")
        assert checked > 50
    finally:
        a.cleanup()


def test_kill_9_mid_import_loses_no_imported_record() -> None:
    """``agent import`` stores over many connections, in group commits: the agent killed in
    the middle, every record the import reported as imported (its store acknowledged) is
    in the vault after a restart, with its value, and the rest are reported as failed."""
    a = AgentProcess()
    try:
        a.start()
        a.init_passphrase()
        n = 30_000
        source = a.home / "import.json"
        source.write_text(json.dumps({f"k{i:05d}": f"value-{i}-durable" for i in range(n)}))
        importing = subprocess.Popen(a.command("import", "json", str(source), "--json"), env=a.env, text=True,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            with a.client() as c:
                until(lambda: c.status()["writes_committed"] >= 2_000, 60, "an import under way")
            a.kill()  # SIGKILL, mid-import
            out, err = importing.communicate(timeout=120)
        finally:
            if importing.poll() is None:
                importing.kill()
                importing.wait()
        assert importing.returncode == 1, err
        items = json.loads(out)["items"]
        imported = [i["name"] for i in items if i["status"] == "imported"]
        assert len(items) == n and 0 < len(imported) < n
        assert {i["status"] for i in items} == {"imported", "failed"}
        assert integrity(vault_file(a)) == "ok"
        a.start()
        with a.client(timeout=60) as c:
            c.unlock(PASSPHRASE)
            values = c.get_many(imported)
            assert values == [f"value-{int(name[1:])}-durable" for name in imported], "an imported record was lost"
            assert len(c.list()) >= len(imported)  # and perhaps some whose answer the kill cut off
    finally:
        a.cleanup()
