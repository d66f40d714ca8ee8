"""The agent core against real `agent serve` processes on real Unix sockets."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time

import pytest

from client import Client, errors, protocol
from support import AgentProcess, connect, raw_request, read_reply, short_tmpdir, until


def test_hello_lists_every_op(agent: AgentProcess) -> None:
    with agent.client() as c:
        hello = c.hello()
    assert hello["protocol"] == protocol.PROTOCOL_VERSION
    assert set(hello["ops"]) == set(protocol.OPS)
    assert hello["agent"]


def test_status_json_fields(agent: AgentProcess) -> None:
    done = agent.cli("status", "--json")
    assert done.returncode == 0, done.stderr
    st = json.loads(done.stdout)
    for field in ("pid", "version", "protocol", "socket", "locked", "uptime_s", "hardening", "key_source"):
        assert field in st
    assert st["pid"] == agent.pid
    assert st["socket"] == str(agent.socket)
    assert st["locked"] is True and st["initialized"] is False


def test_socket_and_directory_modes(agent: AgentProcess) -> None:
    assert stat.S_IMODE(agent.socket.stat().st_mode) == 0o600
    assert stat.S_IMODE(agent.socket.parent.stat().st_mode) == 0o700
    vault_dir = agent.home / "data" / "credential-agent"
    assert stat.S_IMODE(vault_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((vault_dir / "vault.sqlite3").stat().st_mode) == 0o600


def test_default_socket_path_is_under_the_runtime_dir() -> None:
    home = short_tmpdir()
    env = {"CREDENTIAL_AGENT_SOCK": ""}
    a = AgentProcess(home, env=env)
    a.env.pop("CREDENTIAL_AGENT_SOCK")
    a.socket = home / "run" / "credential-agent" / "agent.sock"
    try:
        a.start()
        assert stat.S_IMODE(a.socket.parent.stat().st_mode) == 0o700
        done = a.cli("status", "--json")
        assert json.loads(done.stdout)["socket"] == str(a.socket)
    finally:
        a.cleanup()


def test_profile_namespaces_paths() -> None:
    home = short_tmpdir()
    a = AgentProcess(home, env={"CREDENTIAL_AGENT_PROFILE": "work"})
    a.env.pop("CREDENTIAL_AGENT_SOCK")
    a.socket = home / "run" / "credential-agent-work" / "agent.sock"
    try:
        a.start()
        st = json.loads(a.cli("status", "--json").stdout)
        assert st["socket"] == str(a.socket)
        assert "credential-agent-work" in st["vault"]
    finally:
        a.cleanup()


def test_a_second_agent_on_the_vault_through_another_socket_names_the_first_ones(agent: AgentProcess) -> None:
    other = agent.home / "run" / "other.sock"
    done = subprocess.run(agent.command("serve"), env={**agent.env, "CREDENTIAL_AGENT_SOCK": str(other)},
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0  # as every second agent: one vault, one agent, nothing wrong
    said = f"already running on this vault (pid {agent.pid}), listening at {agent.socket}, not at {other}"
    assert said in done.stderr
    assert f"CREDENTIAL_AGENT_SOCK={agent.socket}" in done.stderr
    with agent.client() as c:  # the first one is untouched
        assert c.hello()


def test_second_instance_says_already_running(agent: AgentProcess) -> None:
    done = subprocess.run(agent.command("serve"), env=agent.env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0
    assert "already running" in done.stderr
    with agent.client() as c:  # the first one is untouched
        assert c.hello()


def test_stale_socket_is_replaced() -> None:
    a = AgentProcess()
    try:
        a.start()
        a.kill()  # SIGKILL leaves the socket file behind
        assert a.socket.exists()
        with pytest.raises(errors.AgentUnavailable):
            with a.client() as c:
                c.hello()
        a.start()
        with a.client() as c:
            assert c.hello()
    finally:
        a.cleanup()


def test_sigterm_removes_socket_and_exits_0(agent: AgentProcess) -> None:
    agent.signal(signal.SIGTERM)
    assert agent.proc is not None
    assert agent.proc.wait(15) == 0
    assert not agent.socket.exists()


def test_stop_command(agent: AgentProcess) -> None:
    done = agent.cli("stop")
    assert done.returncode == 0, done.stderr
    assert agent.proc is not None and agent.proc.wait(15) == 0
    assert not agent.socket.exists()
    done = agent.cli("status")
    assert done.returncode == 4


def test_in_flight_request_finishes_on_sigterm(unlocked_agent: AgentProcess) -> None:
    a = unlocked_agent
    s = connect(a)
    s.sendall(raw_request("unlock", {"passphrase": "wrong"}))  # held ~0.1 s + scrypt
    time.sleep(0.05)
    a.signal(signal.SIGTERM)
    # already unlocked, so the reply comes at once; the point is it comes
    reply = read_reply(s)
    assert reply["ok"] is True
    assert a.proc is not None and a.proc.wait(15) == 0


@pytest.mark.parametrize(
    "garbage",
    [
        b"\x00\x00\x00\x00",  # zero length
        (protocol.MAX_FRAME + 1).to_bytes(4, "big"),
        b"\xff\xff\xff\xff",
        b"\x00\x00\x00\x03\xc1\xc1\xc1",  # not msgpack
        b"\x00\x00\x00\x01\x90",  # msgpack, not a map
        raw_request("hello", v=99),
        raw_request("no_such_op"),
        raw_request("get", {"platform": 42}),
    ],
)
def test_garbage_gets_an_error_and_others_keep_being_served(agent: AgentProcess, garbage: bytes) -> None:
    bystander = agent.client()
    assert bystander.hello()
    s = connect(agent)
    s.sendall(garbage)
    reply = read_reply(s)
    assert reply["ok"] is False
    assert reply["error"]["code"] in {"bad_request", "unsupported_version", "unknown_op"}
    assert bystander.hello()  # same connection, still served
    s.close()
    assert agent.proc is not None and agent.proc.poll() is None


def test_truncated_frame_then_close_does_not_hurt(agent: AgentProcess) -> None:
    s = connect(agent)
    s.sendall(raw_request("hello")[:-2])
    s.close()
    with agent.client() as c:
        assert c.hello()


def test_bad_length_closes_the_connection(agent: AgentProcess) -> None:
    s = connect(agent)
    s.sendall(b"\x00\x00\x00\x00" + raw_request("hello"))
    assert read_reply(s)["ok"] is False
    assert s.recv(100) == b""  # closed: the stream cannot be resynchronised


def test_pipelined_requests_answer_in_order(agent: AgentProcess) -> None:
    s = connect(agent)
    s.sendall(raw_request("hello") + raw_request("nope") + raw_request("status") + raw_request("get", {}))
    replies = [read_reply(s) for _ in range(4)]
    assert replies[0]["ok"] and "ops" in replies[0]["result"]
    assert replies[1]["error"]["code"] == "unknown_op"
    assert replies[2]["ok"] and "pid" in replies[2]["result"]
    assert replies[3]["error"]["code"] == "bad_request"


def test_sync_client_reconnects_after_restart() -> None:
    a = AgentProcess()
    try:
        a.start()
        c = a.client()
        pid1 = c.status()["pid"]
        a.stop()
        a.start()
        assert c.status()["pid"] != pid1  # the dropped connection was replaced once, silently
        c.close()
    finally:
        a.cleanup()


async def test_async_client_basic_and_reconnect() -> None:
    from client import AsyncClient

    a = AgentProcess()
    try:
        a.start()
        async with AsyncClient(a.socket, autostart=False) as c:
            pid1 = (await c.status())["pid"]
            assert (await c.hello())["protocol"] == 1
            a.stop()
            a.start()
            assert (await c.status())["pid"] != pid1
    finally:
        a.cleanup()


async def test_async_client_is_task_safe(agent: AgentProcess) -> None:
    import asyncio

    from client import AsyncClient

    async with AsyncClient(agent.socket, autostart=False) as c:
        results = await asyncio.gather(*(c.hello() for _ in range(50)))
    assert all(r["protocol"] == 1 for r in results)


def test_sync_client_is_thread_safe(agent: AgentProcess) -> None:
    import concurrent.futures

    c = agent.client()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        pids = list(pool.map(lambda _: c.status()["pid"], range(200)))
    assert set(pids) == {agent.pid}
    c.close()


def test_no_agent_raises_agent_unavailable(tmp_path) -> None:
    c = Client(tmp_path / "nothing.sock", autostart=False)
    with pytest.raises(errors.AgentUnavailable) as info:
        c.hello()
    assert "agent start" in info.value.message
    assert isinstance(info.value, ConnectionError)


def test_client_timeout(tmp_path) -> None:
    # a listening socket that never answers
    path = tmp_path / "mute.sock"
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    srv.bind(str(path))
    os.umask(old)
    srv.listen(1)
    c = Client(path, timeout=0.3, autostart=False)
    with pytest.raises(errors.AgentTimeout) as info:
        c.hello()
    assert "within 0.3 s" in info.value.message  # the timeout it applied (the kernel's, see test_client_guards)
    srv.close()


def test_client_refuses_a_world_accessible_socket(agent: AgentProcess) -> None:
    os.chmod(agent.socket, 0o666)
    with pytest.raises(errors.UntrustedSocket):
        with agent.client() as c:
            c.hello()


def test_start_and_stop_background_agent() -> None:
    a = AgentProcess()
    try:
        done = a.cli("start")
        assert done.returncode == 0, done.stderr
        st = json.loads(a.cli("status", "--json").stdout)
        assert st["running"]
        again = a.cli("start")
        assert again.returncode == 0 and "already running" in again.stdout
        assert a.cli("stop").returncode == 0
        deadline = time.monotonic() + 10
        while a.socket.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not a.socket.exists()
    finally:
        a.cli("stop")
        a.cleanup()


def test_usage_errors_exit_2(agent: AgentProcess) -> None:
    assert agent.cli("frobnicate").returncode == 2
    assert agent.cli("get").returncode == 2


def test_python_m_agent_matches_console_script() -> None:
    done = subprocess.run([sys.executable, "-m", "agent", "--version"], capture_output=True, text=True)
    assert done.returncode == 0 and "credential-agent" in done.stdout


def test_unusable_socket_path_is_agent_unavailable(tmp_path) -> None:
    long_path = tmp_path / ("x" * 120) / "agent.sock"
    with pytest.raises(errors.AgentUnavailable):
        Client(long_path, autostart=False).hello()


async def test_async_unusable_socket_path_is_agent_unavailable(tmp_path) -> None:
    from client import AsyncClient

    with pytest.raises(errors.AgentUnavailable) as info:
        await AsyncClient(tmp_path / "none.sock", autostart=False).hello()
    assert "agent start" in info.value.message


def test_replies_stay_in_order_when_the_reader_is_slow(unlocked_agent: AgentProcess) -> None:
    """Big replies fill the socket (the server pauses writing) while a slow request is
    in flight: the frames after it must still be answered after it."""
    import threading

    a = unlocked_agent
    with a.client(timeout=30) as c:
        c.store("big", "B" * 60000, validate=False)
        c.store("small", "SMALL-VALUE", validate=False)
    frames = [raw_request("get", {"platform": "big"}) for _ in range(15)]
    frames.append(raw_request("rotate_key", {"passphrase": "wrong"}))  # slow: scrypt + delay
    frames.append(raw_request("get", {"platform": "small"}))
    s = connect(a)
    s.settimeout(30)
    threading.Thread(target=s.sendall, args=(b"".join(frames),), daemon=True).start()
    time.sleep(0.3)  # the server fills its send buffer and pauses writing
    replies = [read_reply(s) for _ in frames]
    assert all(r["ok"] and r["result"] == "B" * 60000 for r in replies[:15])
    assert replies[15]["error"]["code"] == "bad_passphrase"
    assert replies[16]["result"] == "SMALL-VALUE"
    s.close()


def test_a_keystore_vault_loads_its_unlock_code_before_its_first_request(keyring_agent: AgentProcess) -> None:
    """keyring's imports (~60 ms) are not paid by the first request that unlocks the vault:
    they load in a thread once the agent serves, and nothing is asked of the keystore."""
    a = keyring_agent
    with a.client(timeout=30) as c:
        c.init("keyring")
        c.store("runpod", "rp_" + "k" * 30, validate=False)
    a.stop()
    a.start()  # the same vault, locked: it unlocks itself on the first request that needs the key
    until(lambda: "loaded the code unlocking a keyring vault needs" in a.log(), 15, "the keyring code loaded")
    with a.client(timeout=30) as c:
        assert c.status()["locked"]  # loading code unlocked nothing
        assert c.get("runpod") == "rp_" + "k" * 30
