"""agent.keys.early without a keystore: what its helper says of vaults it must not read,
that it makes no file, and that a helper nobody waits for is killed and reaped.

Real forks of this process; the keystore path is covered end to end by
tests/client/test_autostart_keystore.py against a real Secret Service.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

import pytest

from agent.keys import early
from agent.stores import VaultMeta
from agent.stores.sqlite import SqliteStore

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="the helper is forked: POSIX only")


def started(vault: Path) -> early.Helper:
    assert early.hold(vault.with_name("agent.lock"))
    early.start(vault)
    fd = early.held(vault.with_name("agent.lock"))
    assert fd is not None
    os.close(fd)  # the lock, let go as an agent that stops does
    helper = early.claim()
    assert helper is not None
    assert early.claim() is None  # claimed once
    return helper


def gone(pid: int) -> bool:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True  # reaped already
    return False


def test_no_vault_there_reads_nothing_and_makes_no_file(tmp_path: Path) -> None:
    vault = tmp_path / "vault.sqlite3"
    helper = started(vault)
    assert helper.wait() is None
    assert gone(helper.pid)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["agent.lock"]  # no vault made


def test_a_vault_not_initialised_or_not_a_keystore_vault_is_not_read(tmp_path: Path) -> None:
    vault = tmp_path / "vault.sqlite3"
    SqliteStore(vault).close()  # closed before the fork, as an agent's helper starts before it opens its vault
    assert started(vault).wait() is None  # made, no key source yet
    store = SqliteStore(vault)
    try:
        meta = VaultMeta(store, lambda fn, *a: asyncio.get_running_loop().run_in_executor(None, fn, *a))
        asyncio.run(meta.save({"key_source": b"passphrase", "vault_id": b"ab12"}))
    finally:
        store.close()
    assert started(vault).wait() is None


def test_a_message_parses_and_anything_else_reads_as_nothing() -> None:
    def answer(message: bytes) -> tuple[str, bytes | None] | None:
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.write(write_end, message)
            os._exit(0)
        os.close(write_end)
        return early.Helper(pid, read_end).wait()

    assert answer(b"Kmaster-key-ab12\0" + b"k" * 44) == ("master-key-ab12", b"k" * 44)
    assert answer(b"Nmaster-key-ab12") == ("master-key-ab12", None)
    assert answer(b"E") is None
    assert answer(b"-") is None
    assert answer(b"") is None  # it died before it said anything
    assert answer(b"Kmaster-key-ab12\0") is None  # no key after the name


def test_a_helper_nobody_claims_is_killed_and_reaped() -> None:
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # a helper that hangs, as one waiting on a keystore that never answers does
        os.close(read_end)
        time.sleep(60)
        os._exit(0)
    os.close(write_end)
    early._pending = early.Helper(pid, read_end)  # as start() leaves it
    early.drop()
    assert early.claim() is None
    deadline = time.monotonic() + 10  # reaped by a thread of its own
    while not gone(pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert gone(pid)
    with pytest.raises(OSError):
        os.fstat(read_end)  # its pipe is closed


def test_only_the_agent_that_holds_the_vault_starts_a_helper(tmp_path: Path) -> None:
    """Of several agents started at once, the one that takes the vault's lock first (the one
    that will serve) reads the key; the others start no helper."""
    import fcntl

    lock = tmp_path / "agent.lock"
    other = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(other, fcntl.LOCK_EX)  # an agent that holds the vault already
    assert not early.hold(lock)
    early.start(tmp_path / "vault.sqlite3")
    assert early.claim() is None and early.held(lock) is None
    os.close(other)
    assert early.hold(lock)
    fd = early.held(lock)
    assert fd is not None and early.held(lock) is None  # handed on once
    probe = os.open(lock, os.O_RDWR)
    with pytest.raises(BlockingIOError):
        fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held through fd
    os.close(probe)
    os.close(fd)


def test_a_refusal_is_passed_on_as_the_keystore_gave_it() -> None:
    from client import errors

    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.write(write_end, b"Xkeystore_locked\0the OS keystore is locked; unlock it and try again")
        os._exit(0)
    os.close(write_end)
    said = early.Helper(pid, read_end).wait()
    assert isinstance(said, errors.KeystoreLocked)
    assert said.message == "the OS keystore is locked; unlock it and try again"


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="sets the CPU affinity (Linux)")
def test_no_helper_where_the_agent_has_one_cpu(tmp_path: Path) -> None:
    child = os.fork()
    if child == 0:
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
        assert early.hold(tmp_path / "agent.lock")
        early.start(tmp_path / "vault.sqlite3")
        os._exit(0 if early.cpus() == 1 and early.claim() is None else 3)
    assert os.waitstatus_to_exitcode(os.waitpid(child, 0)[1]) == 0
