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
    early.start(vault, vault.with_name("agent.lock"))
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
    assert sorted(p.name for p in tmp_path.iterdir()) == ["agent.early.lock"]  # no vault made


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
    assert gone(pid)
    with pytest.raises(OSError):
        os.fstat(read_end)  # its pipe is closed


def test_a_helper_reads_nothing_where_an_agent_holds_the_vault_or_another_helper_reads() -> None:
    import fcntl
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        lock = Path(d) / "agent.lock"
        assert early.alone(lock)  # no agent ever ran here: this process now holds the helpers' lock
        second = os.fork()
        if second == 0:  # another helper at the same moment
            os._exit(0 if early.alone(lock) else 3)
        assert os.waitstatus_to_exitcode(os.waitpid(second, 0)[1]) == 3
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)  # an agent serves this vault
        third = os.fork()
        if third == 0:
            os._exit(0 if early.alone(lock) else 3)
        assert os.waitstatus_to_exitcode(os.waitpid(third, 0)[1]) == 3
        os.close(fd)


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="sets the CPU affinity (Linux)")
def test_no_helper_where_the_agent_has_one_cpu(tmp_path: Path) -> None:
    child = os.fork()
    if child == 0:
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
        early.start(tmp_path / "vault.sqlite3", tmp_path / "agent.lock")
        os._exit(0 if early.cpus() == 1 and early.claim() is None else 3)
    assert os.waitstatus_to_exitcode(os.waitpid(child, 0)[1]) == 0
