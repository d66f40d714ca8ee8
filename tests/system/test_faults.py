"""Faults around the agent: a stopped or killed Secret Service, a full or read-only disk.

The keystore tests run their OWN Secret Service (gnome-keyring on a private D-Bus
bus), never the session one: they stop and kill it.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from client import errors
from support import PASSPHRASE, AgentProcess, SecretService, SecretServiceUnavailable, _alive

DEADLINE = 1.5  # keystore_timeout for these agents, in seconds


class OwnSecretService(SecretService):
    """A Secret Service these tests may stop, kill and bring back."""

    def kill_keyring(self) -> None:
        assert self.gkd_pid is not None
        os.kill(self.gkd_pid, signal.SIGKILL)
        for _ in range(250):
            if not _alive(self.gkd_pid):
                break
            time.sleep(0.02)
        self.gkd_pid = None

    def restart_keyring(self, timeout: float = 15.0) -> None:
        """gnome-keyring again, on the same bus with the same keyring files, unlocked.

        Meanwhile the bus may have activated a locked gnome-keyring on its own (its
        D-Bus service file): ``--replace`` takes over from it.
        """
        subprocess.run(
            ["gnome-keyring-daemon", "--replace", "--daemonize", "--unlock", "--components=secrets"],
            env=self._daemon_env(), input=self.password, capture_output=True, text=True, timeout=timeout,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            reply = self._bus_call("--dest=org.freedesktop.DBus", "/org/freedesktop/DBus",
                                   "org.freedesktop.DBus.GetConnectionUnixProcessID",
                                   "string:org.freedesktop.secrets")
            locked = self._bus_call("--dest=org.freedesktop.secrets", "/org/freedesktop/secrets/aliases/default",
                                    "org.freedesktop.DBus.Properties.Get", "string:org.freedesktop.Secret.Collection",
                                    "string:Locked")
            if reply and " ".join(locked.split()) == "variant boolean false":
                self.gkd_pid = int(reply.split()[-1])
                return
            time.sleep(0.05)
        raise SecretServiceUnavailable("gnome-keyring did not come back on the bus")


@pytest.fixture
def own_secret_service(secret_service: SecretService) -> Iterator[OwnSecretService]:
    # depending on the session fixture makes this skip (or fail in CI) exactly as it does
    ss = OwnSecretService()
    try:
        ss.start()
        ss.check()
    except SecretServiceUnavailable as e:
        ss.stop()
        pytest.fail(f"a second Secret Service could not start although the first did: {e}")
    yield ss
    ss.stop()


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t = time.monotonic()
    try:
        result: Any = fn()
    except errors.AgentError as e:
        result = e
    return time.monotonic() - t, result


def fast_requests_meanwhile(a: AgentProcess, until: concurrent.futures.Future[Any]) -> list[bool]:
    """hello/status/list rounds on another connection while ``until`` runs: for each,
    whether ``until`` was still running when the round had its answers."""
    answered_while_pending = []
    with a.client(timeout=10) as c:
        while not until.done():
            c.hello()
            c.status()
            c.list()
            answered_while_pending.append(not until.done())
            time.sleep(0.05)
    return answered_while_pending


def assert_keystore_failures(a: AgentProcess, calls: list[Callable[[], Any]], *, hung: bool = True) -> None:
    """Run ``calls`` at once; each fails with keystore_unavailable within the deadline,
    while requests that do not need the keystore keep being answered quickly."""
    with concurrent.futures.ThreadPoolExecutor(len(calls) + 1) as pool:
        futures = [pool.submit(timed, call) for call in calls]
        everything = pool.submit(concurrent.futures.wait, futures)
        answered = fast_requests_meanwhile(a, everything)
        results = [f.result() for f in futures]
    for _, result in results:
        assert isinstance(result, errors.KeystoreUnavailable), result
        if hung:  # a stopped daemon: the deadline the agent applied
            assert f"did not answer within {DEADLINE:g} s" in result.message, result.message
    # requests that need no keystore were answered while the keystore calls hung (an
    # order of events, not a duration: a slow machine cannot break it)
    assert any(answered), "no other request was answered while the keystore calls were pending"


def test_stopped_and_killed_secret_service(own_secret_service: OwnSecretService) -> None:
    ss = own_secret_service
    a = AgentProcess(env={**ss.env, "CREDENTIAL_AGENT_KEYSTORE_TIMEOUT": str(DEADLINE)}).start()
    try:
        with a.client(timeout=30) as c:
            assert c.init("keyring")["key_source"] == "keyring"
            c.store("alpha", "alpha-value-0123456789")
            c.lock()

            # SIGSTOP: the daemon never answers; unlock attempts hit the deadline
            ss.pause()
            try:
                assert_keystore_failures(a, [lambda: a.client(timeout=30).unlock() for _ in range(3)])
                # a restarted agent unlocks itself on first use (not locked by request): same story for get
                a.stop()
                a.start()
                assert_keystore_failures(a, [lambda: a.client(timeout=30).get("alpha") for _ in range(3)])
            finally:
                ss.resume()
            assert c.get("alpha") == "alpha-value-0123456789"  # recovered, no restart needed
            c.store("beta", "beta-value-0123456789")

            # killed: gone from the bus; the agent says so, then recovers when it is back
            ss.kill_keyring()
            a.stop()
            a.start()
            assert_keystore_failures(a, [lambda: a.client(timeout=30).get("alpha") for _ in range(3)], hung=False)
            ss.restart_keyring()
            assert c.get("alpha") == "alpha-value-0123456789"
            assert c.get("beta") == "beta-value-0123456789"
        assert a.proc is not None and a.proc.poll() is None
    finally:
        ss.resume() if ss.gkd_pid else None
        a.cleanup()


# --- a full or read-only data directory -------------------------------------------------------
@contextlib.contextmanager
def small_tmpfs(size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted on a fresh dir (root only), unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small file system for the data directory needs root")
    if shutil.which("mount") is None:
        pytest.skip("mount(8) is not installed")
    where = Path(subprocess.check_output(["mktemp", "-d", "/tmp/ca-fs-XXXXXX"], text=True).strip())
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(where)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        where.rmdir()
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)
        with contextlib.suppress(OSError):
            where.rmdir()


def fill(fs: Path) -> Path:
    """Take every free byte of ``fs``; return the filler file."""
    filler = fs / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (65536, 4096, 1):
            with contextlib.suppress(OSError):
                while os.write(fd, b"\0" * size):
                    pass
    finally:
        os.close(fd)
    return filler


def test_full_disk_clear_error_nothing_lost_reads_continue() -> None:
    with small_tmpfs("2m") as fs:
        a = AgentProcess(env={"XDG_DATA_HOME": str(fs)}).start()
        try:
            acked: dict[str, str] = {}
            with a.client(timeout=30) as c:
                c.init("passphrase", PASSPHRASE)
                for i in range(20):
                    acked[f"before{i}"] = f"before-{i}-" + "v" * 40
                    c.store(f"before{i}", acked[f"before{i}"])
                filler = fill(fs)
                failure = None
                for i in range(400):  # until the WAL cannot grow any more
                    key, value = f"full{i}", f"full-{i}-" + "w" * 2000
                    try:
                        c.store(key, value)
                    except errors.StorageError as e:
                        failure = e
                        break
                    acked[key] = value
                assert failure is not None, "400 writes of 2 KB fit in a full 2 MB file system?"
                assert failure.code == "storage_error"
                assert "full" in failure.message, failure.message
                # a failed update leaves the old value in place
                with contextlib.suppress(errors.StorageError):
                    c.update("before0", "replaced-" + "x" * 3000)
                    acked["before0"] = "replaced-" + "x" * 3000
                # writers at once share transactions: one that fails fails each of its writes, and
                # leaves nothing of them, on disk or in the agent
                refused: list[str] = []

                def writer(n: int) -> None:
                    with a.client(timeout=30) as w:
                        for i in range(5):
                            key, value = f"group{n}x{i}", f"group-{n}-{i}-" + "g" * 2000
                            try:
                                w.store(key, value)
                            except errors.StorageError:
                                refused.append(key)
                            else:
                                acked[key] = value

                writers = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
                for t in writers:
                    t.start()
                for t in writers:
                    t.join(60)
                assert refused, "40 writes of 2 KB fit on a full file system?"
                for key in refused:
                    with pytest.raises(errors.NotFound):
                        c.get(key)
                # the agent keeps serving reads
                assert c.hello() and {e["platform"] for e in c.list()} >= set(acked)
                for key, value in acked.items():
                    assert c.get(key) == value
                filler.unlink()  # space again: writes work without a restart
                c.store("after", "after-value")
                acked["after"] = "after-value"
            assert a.stop() == 0
            a.start()
            with a.client(timeout=30) as c:
                c.unlock(PASSPHRASE)
                for key, value in acked.items():
                    assert c.get(key) == value
            assert "Traceback" not in a.log()
        finally:
            a.cleanup()


def read_only(fs: Path, on: bool) -> None:
    if on:
        subprocess.run(["mount", "-o", "remount,ro", str(fs)], check=True, capture_output=True)
    else:
        subprocess.run(["mount", "-o", "remount,rw", str(fs)], check=True, capture_output=True)


def test_read_only_data_dir_serves_reads_and_says_why_writes_fail() -> None:
    with small_tmpfs("8m") as fs:
        a = AgentProcess(env={"XDG_DATA_HOME": str(fs)}).start()
        try:
            with a.client(timeout=30) as c:
                c.init("passphrase", PASSPHRASE)
                c.store("alpha", "alpha-value")
                c.store("beta", "beta-value")
            assert a.stop() == 0
            read_only(fs, True)
            a.start()
            with a.client(timeout=30) as c:
                st = c.status()
                assert st["vault_read_only"] and st["credentials"] == 2
                c.unlock(PASSPHRASE)
                assert c.get("alpha") == "alpha-value"
                with pytest.raises(errors.StorageError) as info:
                    c.store("gamma", "gamma-value")
                assert "read-only" in info.value.message
                with pytest.raises(errors.StorageError):
                    c.delete("alpha")
                assert c.get("alpha") == "alpha-value" and c.get("beta") == "beta-value"
                # writable again: the next write reopens the vault, no restart needed
                read_only(fs, False)
                c.store("gamma", "gamma-value")
                assert c.status()["vault_read_only"] is None
            assert a.stop() == 0
            a.start()
            with a.client(timeout=30) as c:
                c.unlock(PASSPHRASE)
                assert [c.get(k) for k in ("alpha", "beta", "gamma")] == ["alpha-value", "beta-value", "gamma-value"]
        finally:
            a.cleanup()


def test_a_full_disk_at_the_first_start_is_named() -> None:
    """No vault can be made and no log line written: `agent start` and a client's autostart say why."""
    with small_tmpfs("1m") as fs:
        a = AgentProcess(env={"XDG_DATA_HOME": str(fs / "data"), "XDG_STATE_HOME": str(fs / "state")})
        try:
            (fs / "data").mkdir(mode=0o700)
            (fs / "state").mkdir(mode=0o700)
            fill(fs)
            done = a.cli("start")
            assert done.returncode != 0
            assert "is full" in done.stderr and "bytes free" in done.stderr, done.stderr
            probe = subprocess.run([sys.executable, "-c", "import client\nwith client.Client() as c: c.status()"],
                                   env={k: v for k, v in a.env.items() if k != "CREDENTIAL_AGENT_NO_AUTOSTART"},
                                   capture_output=True, text=True, timeout=60)
            assert probe.returncode != 0
            assert "could not start a credential agent" in probe.stderr and "is full" in probe.stderr
        finally:
            a.cleanup()
