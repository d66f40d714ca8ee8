"""Attacks from an adversarial review, each reproduced on real agent processes.

Each test makes the attack and checks what the agent reports (its log, its
replies), not how fast this machine is; the figures it prints are for the record.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_agent_core import read_reply

from client import errors
from support import PASSPHRASE, AgentProcess, raw_request


def failures_logged(a: AgentProcess) -> list[int]:
    return [int(n) for n in re.findall(r"wrong passphrase \((\d+) consecutive failures\)", a.log())]


# --- unlock guesses queued by connections that went away -------------------------------------
def test_guesses_of_closed_connections_are_dropped_not_run(
    unlocked_agent: AgentProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    a = unlocked_agent
    with a.client(timeout=30) as c:
        c.lock()
    guesses = 60
    for i in range(guesses):  # each guess on its own connection, which hangs up at once
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(str(a.socket))
        s.sendall(raw_request("unlock", {"passphrase": f"guess {i}"}))
        s.close()
    t0 = time.monotonic()
    with a.client(timeout=120) as c:
        c.unlock(PASSPHRASE)
        assert c.status()["locked"] is False
    took = time.monotonic() - t0
    ran = failures_logged(a)
    with capsys.disabled():
        print(f"\n{guesses} guesses from connections that hung up: {len(ran)} ran, the real unlock took {took:.2f} s")
    # the guesses already in their KDF when their callers left are counted; the rest never run
    assert len(ran) <= 3, ran


def test_waiting_unlocks_are_capped(unlocked_agent: AgentProcess) -> None:
    a = unlocked_agent
    with a.client(timeout=30) as c:
        c.lock()
    socks = []
    for i in range(40):  # all kept open, all waiting their turn
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(120)
        s.connect(str(a.socket))
        s.sendall(raw_request("unlock", {"passphrase": f"guess {i}"}))
        socks.append(s)
    codes = [read_reply(s)["error"]["code"] for s in socks]
    for s in socks:
        s.close()
    assert codes.count("busy") >= 1 and set(codes) <= {"busy", "bad_passphrase"}
    with a.client(timeout=60) as c:  # the agent still serves, and unlocks
        c.unlock(PASSPHRASE)


def test_the_failure_count_survives_a_restart(unlocked_agent: AgentProcess) -> None:
    a = unlocked_agent
    with a.client(timeout=60) as c:
        c.lock()
        for _ in range(3):
            with pytest.raises(errors.BadPassphrase):
                c.unlock("not it")
    a.stop()
    a.start()
    with a.client(timeout=60) as c, pytest.raises(errors.BadPassphrase):
        c.unlock("still not it")
    assert failures_logged(a)[-1] == 4, failures_logged(a)
    with a.client(timeout=60) as c:
        c.unlock(PASSPHRASE)
    a.stop()
    a.start()
    with a.client(timeout=60) as c, pytest.raises(errors.BadPassphrase):
        c.unlock("wrong after a success")
    assert failures_logged(a)[-1] == 1  # a success resets the count, in the vault too


# --- one client holding the agent hostage ----------------------------------------------------------
HOG = """
import socket, sys, time
socks = []
for _ in range(int(sys.argv[2])):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(sys.argv[1])
    socks.append(s)
print("holding", flush=True)
time.sleep(60)
"""


def test_one_process_cannot_take_every_connection_slot() -> None:
    cap = 20
    a = AgentProcess(env={"CREDENTIAL_AGENT_MAX_CONNECTIONS": str(cap)}).start()
    hog = subprocess.Popen([sys.executable, "-c", HOG, str(a.socket), str(cap)], stdout=subprocess.PIPE, text=True)
    try:
        assert hog.stdout is not None and hog.stdout.readline().strip() == "holding"
        time.sleep(0.3)  # the agent has accepted them all
        with a.client(timeout=10) as c:  # another process of the owner is still served
            assert c.hello()
            assert c.status()["pid"] == a.pid
        assert "closing the longest-idle of the 20 connections of pid" in a.log()
    finally:
        hog.kill()
        hog.wait()
        a.cleanup()


def test_a_frame_dripped_a_byte_at_a_time_is_cut_off() -> None:
    a = AgentProcess(env={"CREDENTIAL_AGENT_FRAME_TIMEOUT": "1", "CREDENTIAL_AGENT_CONNECTION_IDLE_TIMEOUT": "300"})
    a.start()
    try:
        frame = raw_request("get", {"platform": "runpod"})
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(str(a.socket))
        closed_after = None
        t0 = time.monotonic()
        for byte in frame[:-1]:  # never the last byte: the frame never completes
            try:
                s.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                closed_after = time.monotonic() - t0
                break
            s.settimeout(0.3)
            try:
                if s.recv(1) == b"":
                    closed_after = time.monotonic() - t0
                    break
            except TimeoutError:
                pass
            if time.monotonic() - t0 > 20:
                break
        s.close()
        assert closed_after is not None, "a dripping frame kept its connection past the frame timeout"
        assert "a frame did not arrive whole within 1 s" in a.log()
        with a.client(timeout=10) as c:
            assert c.hello()
    finally:
        a.cleanup()


# --- what the agent still holds after a lock ---------------------------------------------------------
def _held(*roots: object) -> list[object]:
    """Every object reachable from ``roots`` through containers and instances (not through
    modules, functions or classes, which lead to the whole interpreter)."""
    import gc
    import types

    skip = (types.ModuleType, types.FunctionType, types.BuiltinFunctionType, type, types.CodeType,
            types.FrameType)
    seen: set[int] = set()
    out: list[object] = []
    todo = list(roots)
    while todo:
        obj = todo.pop()
        if id(obj) in seen or isinstance(obj, skip):
            continue
        seen.add(id(obj))
        out.append(obj)
        todo.extend(gc.get_referents(obj))
    return out


async def test_nothing_of_a_value_or_passphrase_is_held_after_lock(tmp_path: Path) -> None:
    """In this process, a real agent on a real socket: after `lock`, no object the agent
    can reach holds a stored value or the passphrase (a connection's last frame included),
    while the connections that sent them stay open."""
    import asyncio
    import secrets

    from agent.config import Options
    from agent.handlers import make_dispatch
    from agent.state import Agent
    from agent.transport.connection import Server
    from agent.transport.unix import UnixListener
    from client import Client

    mark = "held" + secrets.token_hex(8)
    passphrase, value = f"{mark}-passphrase", f"{mark}-value-" + "k" * 30
    sock = tmp_path / "agent.sock"
    agent = Agent(Options(socket=sock, vault=tmp_path / "vault.sqlite3"))
    server = Server(make_dispatch(agent), UnixListener.bind(sock))
    await server.start()
    # each secret is the last frame its connection sent; both connections stay open
    unlocker, writer, locker = (Client(sock, timeout=60, autostart=False) for _ in range(3))
    try:
        await asyncio.to_thread(unlocker.init, "passphrase", passphrase)
        await asyncio.to_thread(locker.lock)
        await asyncio.to_thread(unlocker.unlock, passphrase)
        await asyncio.to_thread(writer.store, "leak", value, validate=False)
        assert agent.entries[("leak", "api-key")].value == value  # held while unlocked, as it must be
        await asyncio.to_thread(locker.lock)
        await asyncio.sleep(0.1)
        assert len(server.connections) == 3, "the connections are still open"
        found = [type(o).__name__ for o in _held(agent, server)
                 if isinstance(o, (str, bytes, bytearray)) and mark.encode() in (o.encode() if isinstance(o, str)
                                                                                 else bytes(o))]
        assert found == [], f"after lock the agent still holds {found}"
    finally:
        for c in (unlocker, writer, locker):
            c.close()
        await server.close()
        server.listener.close()
        agent.close()
