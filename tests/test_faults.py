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
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from client import errors
from support import PASSPHRASE, AgentProcess, SecretService, SecretServiceUnavailable, _alive

DEADLINE = 1.5  # keystore_timeout for these agents, in seconds
SLACK = 2.5  # scheduling on a loaded 2-core machine


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


def fast_requests_meanwhile(a: AgentProcess, until: concurrent.futures.Future[Any]) -> list[float]:
    """hello/status/list latencies measured on another connection while ``until`` runs."""
    latencies = []
    with a.client(timeout=10) as c:
        while not until.done():
            t = time.monotonic()
            c.hello()
            c.status()
            c.list()
            latencies.append(time.monotonic() - t)
            time.sleep(0.05)
    return latencies


def assert_keystore_failures(a: AgentProcess, calls: list[Callable[[], Any]]) -> None:
    """Run ``calls`` at once; each fails with keystore_unavailable within the deadline,
    while requests that do not need the keystore keep being answered quickly."""
    with concurrent.futures.ThreadPoolExecutor(len(calls) + 1) as pool:
        futures = [pool.submit(timed, call) for call in calls]
        everything = pool.submit(concurrent.futures.wait, futures)
        latencies = fast_requests_meanwhile(a, everything)
        results = [f.result() for f in futures]
    for elapsed, result in results:
        assert isinstance(result, errors.KeystoreUnavailable), result
        assert elapsed < DEADLINE + SLACK, f"keystore failure took {elapsed:.2f} s (deadline {DEADLINE} s)"
    assert latencies and max(latencies) < 1.0, f"other requests were held up: {max(latencies or [0]):.2f} s"


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
            assert_keystore_failures(a, [lambda: a.client(timeout=30).get("alpha") for _ in range(3)])
            ss.restart_keyring()
            assert c.get("alpha") == "alpha-value-0123456789"
            assert c.get("beta") == "beta-value-0123456789"
        assert a.proc is not None and a.proc.poll() is None
    finally:
        ss.resume() if ss.gkd_pid else None
        a.cleanup()
