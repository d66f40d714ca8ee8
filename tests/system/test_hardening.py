"""Hardening of the real agent process, checked from the outside.

- PR_SET_DUMPABLE 0 and RLIMIT_CORE 0, read from /proc/<pid>/ and from
  ``agent status --json`` (``hardening``);
- the growing delay after wrong passphrases, measured;
- a flood of 1,000 idle connections: the cap and the idle deadline hold, the
  agent does not run out of descriptors, and a new client is served afterwards.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from client import errors
from support import PASSPHRASE, AgentProcess, base_env, short_tmpdir
from support.otheruser import other_user, readable_copy, user_python

__all__ = ["other_user"]  # a fixture

linux_only = pytest.mark.skipif(
    not sys.platform.startswith("linux"),
    reason="/proc and PR_SET_DUMPABLE are Linux-only; macOS uses PT_DENY_ATTACH (not testable on this machine)",
)


# --- dumpable and core dumps ----------------------------------------------------------------------
def core_limit(pid: int) -> list[str]:
    limits = Path(f"/proc/{pid}/limits").read_text()
    line = next(line for line in limits.splitlines() if line.startswith("Max core file size"))
    return line.split()[4:6]


def proc_owner(pid: int) -> int:
    return Path(f"/proc/{pid}/status").stat().st_uid


def status_uid(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1])


@linux_only
def test_core_limit_and_status_report(agent: AgentProcess) -> None:
    assert core_limit(agent.pid) == ["0", "0"]
    done = agent.cli("status", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["hardening"] == {"umask_077": True, "rlimit_core_0": True,
                                                     "pr_set_dumpable_0": True}
    assert "pr_set_dumpable_0 yes" in agent.cli("status").stdout


@linux_only
def test_not_dumpable_seen_from_proc(other_user: pwd.struct_passwd) -> None:
    """PR_SET_DUMPABLE 0 from the outside: the kernel hands the /proc entries of a
    non-dumpable process to root, and same-uid processes can no longer read its
    environ. Root sees no difference, so the agent runs as a real second user."""
    user = other_user
    py = user_python(user)
    lib = readable_copy("msgpack", "cryptography", "cffi", "_cffi_backend", "pycparser", "platformdirs")
    home = short_tmpdir()
    env = {**base_env(home), "PYTHONPATH": str(lib)}
    for d, _dirs, _files in os.walk(home):
        os.chown(d, user.pw_uid, user.pw_gid)
    as_user = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": [], "env": env, "cwd": str(home)}
    log = open(home / "agent.log", "wb")
    agent = subprocess.Popen([py, "-m", "agent", "serve", "--log-level", "debug"], stdin=subprocess.DEVNULL,
                             stdout=log, stderr=log, **as_user)  # type: ignore[call-overload]
    control = subprocess.Popen(["sleep", "60"], **as_user)  # type: ignore[call-overload]
    try:
        deadline = time.monotonic() + 30
        while b"serving on" not in (home / "agent.log").read_bytes():
            assert agent.poll() is None, (home / "agent.log").read_text()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert status_uid(agent.pid) == status_uid(control.pid) == user.pw_uid
        assert proc_owner(control.pid) == user.pw_uid  # dumpable: its own
        assert proc_owner(agent.pid) == 0  # not dumpable: root's
        read_environ = "import sys; open(f'/proc/{sys.argv[1]}/environ', 'rb').read(1)"
        for pid, readable in ((control.pid, True), (agent.pid, False)):
            done = subprocess.run([py, "-c", read_environ, str(pid)], capture_output=True, text=True, timeout=30,
                                  **as_user)
            assert (done.returncode == 0) == readable, done.stderr
        assert core_limit(agent.pid) == ["0", "0"]
        done = subprocess.run([py, "-m", "agent", "status", "--json"], capture_output=True, text=True, timeout=30,
                              **as_user)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["hardening"]["pr_set_dumpable_0"] is True
    finally:
        for p in (agent, control):
            p.terminate()
            p.wait(15)
        log.close()
        shutil.rmtree(home, ignore_errors=True)
        shutil.rmtree(lib, ignore_errors=True)


# --- wrong passphrases -------------------------------------------------------------------------------
def decision_times(log: str) -> list[float]:
    """Wall-clock times at which the agent logged each wrong passphrase (before its delay)."""
    out = []
    for line in log.splitlines():
        if "wrong passphrase (" in line:
            stamp, ms = line[:23].split(",")
            out.append(time.mktime(time.strptime(stamp, "%Y-%m-%d %H:%M:%S")) + int(ms) / 1000)
    return out


def test_growing_delay_after_wrong_passphrases(
    unlocked_agent: AgentProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    a = unlocked_agent
    attempts = 6
    replied: list[float] = []
    applied: list[float] = []
    with a.client(timeout=60) as c, a.client(timeout=10) as other:
        c.lock()
        for _ in range(attempts):
            with pytest.raises(errors.BadPassphrase):
                c.unlock("not the passphrase")
            replied.append(time.time())
            applied.append(other.status()["unlock_delay_s"])  # as the agent applies it
        c.unlock(PASSPHRASE)
        c.lock()
        with pytest.raises(errors.BadPassphrase):
            c.unlock("wrong again")
        replied.append(time.time())
    decided = decision_times(a.log())
    assert len(decided) == attempts + 1
    delays = [r - d for d, r in zip(decided, replied, strict=True)]
    with capsys.disabled():
        print("\nwrong passphrase delays (after the KDF, to the reply): "
              + ", ".join(f"{x:.2f}" for x in delays[:-1]) + f" s; after a success: {delays[-1]:.2f} s")
    # failure k waits 0.1 s x k (as ssh-agent), as the agent reports it; each reply came at
    # least that long after the decision (the log's millisecond stamps round down)
    assert applied == pytest.approx([0.1 * k for k in range(1, attempts + 1)]), applied
    for k, x in enumerate(delays[:-1], 1):
        assert 0.1 * k - 0.002 <= x, (k, x)
    with a.client() as c:
        assert c.status()["unlock_failures"] == 1  # a success reset the count; "wrong again" is the first
    for k in range(1, attempts + 1):
        assert f"wrong passphrase ({k} consecutive failures)" in a.log()


# --- a flood of idle connections -------------------------------------------------------------------
def agent_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@contextlib.contextmanager
def flood(path: Path, count: int) -> Iterator[list[socket.socket]]:
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            socks.append(s)
            s.connect(str(path))  # blocking: waits while the listen backlog is full (EAGAIN otherwise)
        yield socks
    finally:
        for s in socks:
            s.close()


def closed_by_agent(s: socket.socket) -> tuple[bool, bytes]:
    """(whether the agent closed ``s``, what it sent first)."""
    s.settimeout(0.0)
    data = b""
    try:
        while chunk := s.recv(65536):
            data += chunk
        return True, data
    except BlockingIOError:
        return False, data
    except ConnectionResetError:
        return True, data


class LimitedAgent(AgentProcess):
    """An agent whose descriptor limit is ``nofile`` (soft and hard), set before exec."""

    def __init__(self, nofile: int, **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.nofile = nofile

    def command(self, *args: str) -> list[str]:
        if args[:1] != ("serve",):
            return super().command(*args)
        n = self.nofile
        setup = (f"import os, resource, sys; resource.setrlimit(resource.RLIMIT_NOFILE, ({n}, {n}));"
                 " os.execv(sys.executable, [sys.executable, '-m', 'agent', *sys.argv[1:]])")
        return [sys.executable, "-c", setup, *args]


@linux_only
def test_half_sent_frames_on_every_slot_lock_no_other_process_out() -> None:
    """One process fills the cap with connections that each sent half a frame (and would
    re-open them as they close): another process's request is still served."""
    cap = 30
    a = AgentProcess(env={"CREDENTIAL_AGENT_MAX_CONNECTIONS": str(cap)}).start()
    try:
        with flood(a.socket, cap) as socks:
            for s in socks:
                s.sendall(b"\x00\x00")  # two of the four bytes of a frame's length
            time.sleep(0.3)
            assert sum(not closed_by_agent(s)[0] for s in socks) == cap  # every slot is held
            other = a.cli("status", "--short")  # another process
            assert other.returncode == 0 and other.stdout.strip() == "uninitialized", other.stderr
            assert sum(closed_by_agent(s)[0] for s in socks) >= 1  # a half-sent one made room
    finally:
        a.cleanup()


@linux_only
def test_flood_of_idle_connections_cap_and_idle_deadline_hold(capsys: pytest.CaptureFixture[str]) -> None:
    cap, idle = 50, 1.5
    a = AgentProcess(env={"CREDENTIAL_AGENT_MAX_CONNECTIONS": str(cap),
                          "CREDENTIAL_AGENT_CONNECTION_IDLE_TIMEOUT": str(idle)}).start()
    try:
        base_fds = agent_fds(a.pid)
        with flood(a.socket, 1000) as socks:
            time.sleep(0.3)
            fds = agent_fds(a.pid)
            assert fds <= base_fds + cap + 2, f"{fds} descriptors for a cap of {cap}"
            states = [closed_by_agent(s) for s in socks]
            refused = [d for closed, d in states if closed]
            assert len(refused) >= 1000 - cap
            assert all(b"too_many_connections" in d for d in refused)
            # a client during the flood gets the typed error, not a hang
            with pytest.raises(errors.TooManyConnections), a.client(timeout=5) as c:
                c.hello()
            # the idle deadline reclaims the held slots
            held = [s for s, (closed, _d) in zip(socks, states, strict=True) if not closed]
            assert len(held) == cap - 1 or len(held) == cap
            time.sleep(idle + 1.5)
            assert all(closed_by_agent(s)[0] for s in held), "idle connections outlived the deadline"
            with a.client(timeout=5) as c:  # served while the flood's sockets are still open on our side
                assert c.hello()
            assert a.proc is not None and a.proc.poll() is None
        with a.client(timeout=5) as c:
            assert c.hello()
        with capsys.disabled():
            print(f"\nflood: 1000 connections, cap {cap}: agent held at most {fds - base_fds} extra descriptors, "
                  f"{len(refused)} refused with too_many_connections, {len(held)} closed after {idle} s idle")
    finally:
        a.cleanup()


@linux_only
def test_flood_cannot_exhaust_descriptors_under_a_low_limit() -> None:
    # a cap configured far above what the descriptor limit allows is lowered to fit
    a = LimitedAgent(256, env={"CREDENTIAL_AGENT_MAX_CONNECTIONS": "5000"}).start()
    try:
        assert "connection cap lowered from 5000 to 192" in a.log()
        with flood(a.socket, 1000) as socks:
            time.sleep(0.3)
            assert agent_fds(a.pid) < 256
            assert sum(closed_by_agent(s)[0] for s in socks) >= 1000 - 192
        deadline = time.monotonic() + 10
        while True:  # the agent notices the closed sockets and frees the slots
            try:
                with a.client(timeout=5) as c:
                    assert c.hello()
                break
            except errors.TooManyConnections:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        assert "Too many open files" not in a.log()
        assert a.proc is not None and a.proc.poll() is None
    finally:
        a.cleanup()
