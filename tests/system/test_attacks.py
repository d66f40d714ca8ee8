"""Attacks from an adversarial review, each reproduced on real agent processes.

Each test makes the attack and checks what the agent reports (its log, its
replies), not how fast this machine is; the figures it prints are for the record.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from client import Client, errors
from support import PASSPHRASE, AgentProcess, SecretService, raw_request, read_reply, short_tmpdir
from support.otheruser import other_user

__all__ = ["other_user"]  # a fixture


@pytest.fixture
def agent_home() -> Iterator[AgentProcess]:
    """An agent's home and environment, with no agent started."""
    a = AgentProcess()
    yield a
    a.cleanup()


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
    # each secret is the last frame its connection sent; the connections stay open
    unlocker, writer, locker, recoverer = (Client(sock, timeout=60, autostart=False) for _ in range(4))
    try:
        await asyncio.to_thread(unlocker.init, "passphrase", passphrase)
        await asyncio.to_thread(locker.lock)
        await asyncio.to_thread(unlocker.unlock, passphrase)
        await asyncio.to_thread(writer.store, "leak", value, validate=False)
        assert agent.entries[("leak", "api-key")].value == value  # held while unlocked, as it must be
        code = await asyncio.to_thread(recoverer.recovery_code, passphrase)  # the passphrase once more
        await asyncio.to_thread(locker.lock)
        await asyncio.sleep(0.1)
        assert len(server.connections) == 4, "the connections are still open"
        assert code.count("-") == 7  # a real recovery code was made, with the passphrase checked
        found = [type(o).__name__ for o in _held(agent, server)
                 if isinstance(o, (str, bytes, bytearray)) and mark.encode() in (o.encode() if isinstance(o, str)
                                                                                 else bytes(o))]
        assert found == [], f"after lock the agent still holds {found}"
    finally:
        for c in (unlocker, writer, locker, recoverer):
            c.close()
        await server.close()
        server.listener.close()
        agent.close()


# --- code from the caller's directory, secrets from the caller's environment ----------------------
PLANTED = (
    "import os, pathlib\n"
    "pathlib.Path(os.environ.get('HOME', '/tmp'), 'PLANTED-CODE-RAN').write_text('the planted agent package ran')\n"
    "raise SystemExit('planted agent package')\n"
)


def plant_agent_package(where: Path) -> None:
    """What any ML project may hold, or an attacker may leave in a shared directory."""
    (where / "agent").mkdir(parents=True)
    for name in ("__init__.py", "__main__.py", "cli.py"):
        (where / "agent" / name).write_text(PLANTED)


def as_console_script(*args: str) -> list[str]:
    """The installed `agent` command: sys.path[0] is its own directory, never the current one."""
    return [sys.executable, "-P", "-m", "agent", *args]


def test_agent_start_in_a_project_with_an_agent_package_runs_the_real_agent(agent_home: AgentProcess) -> None:
    a = agent_home
    project = a.home / "project"
    plant_agent_package(project)
    done = subprocess.run(as_console_script("start"), cwd=project, env=a.env, capture_output=True, text=True,
                          timeout=60)
    try:
        assert not (a.home / "PLANTED-CODE-RAN").exists(), "agent start ran code from the current directory"
        assert done.returncode == 0, done.stderr
        with a.client(timeout=10) as c:
            pid = c.status()["pid"]
        assert os.readlink(f"/proc/{pid}/cwd") == "/"
    finally:
        subprocess.run(as_console_script("stop"), env=a.env, capture_output=True, timeout=60)


def test_autostart_from_a_project_with_an_agent_package_runs_the_real_agent(agent_home: AgentProcess) -> None:
    a = agent_home
    project = a.home / "project"
    plant_agent_package(project)
    env = {k: v for k, v in a.env.items() if k != "CREDENTIAL_AGENT_NO_AUTOSTART"}
    code = "from client import Client; print(Client(timeout=30).hello()['protocol'])"
    done = subprocess.run([sys.executable, "-P", "-c", code], cwd=project, env=env, capture_output=True, text=True,
                          timeout=90)
    try:
        assert not (a.home / "PLANTED-CODE-RAN").exists(), "autostart ran code from the current directory"
        assert done.returncode == 0 and done.stdout.strip() == "1", done.stderr
    finally:
        subprocess.run(as_console_script("stop"), env=a.env, capture_output=True, timeout=60)


@pytest.mark.skipif(os.geteuid() != 0, reason="reading a non-dumpable agent's /proc/PID/environ needs root")
def test_a_started_agent_keeps_none_of_the_callers_secrets(agent_home: AgentProcess) -> None:
    a = agent_home
    secret = "sk-" + "e" * 20 + "CALLER-ENV-CANARY"
    env = {**a.env, "OPENAI_API_KEY": secret, "CREDENTIAL_AGENT_EXEC": "1", "PYTHONPATH": a.env["PYTHONPATH"]}
    done = subprocess.run(as_console_script("start"), env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    try:
        with a.client(timeout=10) as c:
            pid = c.status()["pid"]
        environ = Path(f"/proc/{pid}/environ").read_bytes()
        assert secret.encode() not in environ and b"OPENAI_API_KEY" not in environ
        assert b"CREDENTIAL_AGENT_SOCK=" in environ  # what it needs, it has
    finally:
        subprocess.run(as_console_script("stop"), env=a.env, capture_output=True, timeout=60)


# --- a lock file planted in a shared directory ------------------------------------------------------------
def test_a_planted_lock_file_link_is_never_followed(other_user: pwd.struct_passwd) -> None:
    shared = short_tmpdir("ca-shared-")
    os.chmod(shared, 0o777)  # a team's shared folder
    a = AgentProcess(env={"CREDENTIAL_AGENT_SOCK": str(shared / "agent.sock")})
    bashrc = a.home / ".bashrc"
    bashrc.write_text("export PATH=$HOME/bin:$PATH\n")
    os.chmod(a.home, 0o755)
    planted = subprocess.run(["ln", "-s", str(bashrc), str(shared / "agent.sock.lock")], user=other_user.pw_uid,
                             group=other_user.pw_gid, extra_groups=[], capture_output=True, text=True)
    assert planted.returncode == 0, planted.stderr
    try:
        a.start(wait=False)
        deadline = time.monotonic() + 15
        while "serving on" not in a.log() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "serving on" in a.log(), a.log()
        assert bashrc.read_text() == "export PATH=$HOME/bin:$PATH\n", "the agent wrote through a planted link"
        # and its own client will not use a socket in a directory others may write
        with pytest.raises(errors.UntrustedSocket, match="other users may replace it"), a.client(timeout=5) as c:
            c.hello()
    finally:
        a.cleanup()
        shutil.rmtree(shared, ignore_errors=True)


# --- an impostor socket -----------------------------------------------------------------------------
# Run by the other user: listen at argv[1] (0777, so the victim may connect), write every
# byte received to argv[2], answer nothing; stop after argv[3] seconds.
IMPOSTOR = """
import os, socket, sys, time
path, out, life = sys.argv[1], sys.argv[2], float(sys.argv[3])
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(path)
os.chmod(path, 0o777)
s.listen(64)
s.settimeout(0.2)
print("listening", flush=True)
end = time.monotonic() + life
with open(out, "ab", buffering=0) as f:
    while time.monotonic() < end:
        try:
            c, _ = s.accept()
        except TimeoutError:
            continue
        c.settimeout(0.5)
        try:
            data = c.recv(65536)
            if data:
                f.write(data)
        except OSError:
            pass
        c.close()
"""


def start_impostor(user: pwd.struct_passwd, where: Path, life: float = 30) -> tuple[subprocess.Popen[str], Path]:
    from support.otheruser import user_python

    captured = where / "captured"
    proc = subprocess.Popen([user_python(user), "-c", IMPOSTOR, str(where / "evil.sock"), str(captured), str(life)],
                            user=user.pw_uid, group=user.pw_gid, extra_groups=[], stdout=subprocess.PIPE, text=True,
                            env={"PATH": "/usr/bin:/bin"})
    assert proc.stdout is not None and proc.stdout.readline().strip() == "listening"
    return proc, captured


def attacker_dir(user: pwd.struct_passwd) -> Path:
    d = short_tmpdir("ca-evil-")
    os.chown(d, user.pw_uid, user.pw_gid)
    os.chmod(d, 0o777)
    return d


def test_a_socket_served_by_another_user_gets_nothing(other_user: pwd.struct_passwd, agent_home: AgentProcess) -> None:
    """The file looks right (ours, 0600, in our private directory), but another uid
    listens on it: the client asks the kernel after connect and sends nothing."""
    evil = attacker_dir(other_user)
    proc, captured = start_impostor(other_user, evil)
    try:
        mine = agent_home.socket  # in the victim's own 0700 run directory
        os.rename(evil / "evil.sock", mine)  # the inode keeps its listener
        os.chown(mine, os.getuid(), os.getgid())
        os.chmod(mine, 0o600)
        secret = "rp_" + "s" * 30 + "IMPOSTOR-CANARY"
        with pytest.raises(errors.UntrustedSocket, match=f"runs as uid {other_user.pw_uid}"):
            with agent_home.client(timeout=5) as c:
                c.store("runpod", secret)
        time.sleep(0.6)
        assert not captured.exists() or secret.encode() not in captured.read_bytes()
        assert not captured.exists() or captured.read_bytes() == b"", "the client sent bytes to an impostor"
        done = agent_home.cli("status")
        assert done.returncode == 1 and "was refused" in done.stdout and "runs as uid" in done.stdout, done
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(evil, ignore_errors=True)


def test_a_link_flipped_between_sockets_captures_nothing(
    other_user: pwd.struct_passwd, unlocked_agent: AgentProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    """The socket path points into a directory another user controls, where a link
    flips between the victim's real socket and the attacker's."""
    a = unlocked_agent
    evil = attacker_dir(other_user)
    proc, captured = start_impostor(other_user, evil, life=60)
    os.chmod(a.home, 0o755)  # the attacker's link may point at the real socket
    os.chmod(a.socket.parent, 0o755)
    from support.otheruser import user_python

    flipper = subprocess.Popen(
        [user_python(other_user), "-c", FLIPPER, str(evil / "agent.sock"), str(a.socket), str(evil / "evil.sock")],
        user=other_user.pw_uid, group=other_user.pw_gid, extra_groups=[])
    tries, refused, stored = 150, 0, 0
    try:
        env_sock = str(evil / "agent.sock")
        for i in range(tries):
            try:
                with Client(env_sock, timeout=5, autostart=False) as c:
                    c.store("runpod", f"rp_{i:04d}" + "s" * 30 + "FLIP-CANARY")
                stored += 1
            except errors.AgentError:
                refused += 1
        time.sleep(0.6)
        got = captured.read_bytes() if captured.exists() else b""
        with capsys.disabled():
            print(f"\nflipping link: {tries} stores, {stored} reached the agent, {refused} refused, "
                  f"{got.count(b'FLIP-CANARY')} captured")
        assert b"FLIP-CANARY" not in got
        assert stored == 0  # a directory another user may write is refused before any connect
    finally:
        flipper.kill()
        flipper.wait()
        proc.kill()
        proc.wait()
        shutil.rmtree(evil, ignore_errors=True)


FLIPPER = """
import os, sys, time
link, real, evil = sys.argv[1], sys.argv[2], sys.argv[3]
tmp = link + ".new"
end = time.monotonic() + 60
while time.monotonic() < end:
    for target in (real, evil):
        try:
            os.symlink(target, tmp)
            os.replace(tmp, link)
        except OSError:
            pass
"""


def test_a_taken_temp_dir_does_not_keep_the_agent_from_starting(other_user: pwd.struct_passwd) -> None:
    """Without XDG_RUNTIME_DIR the socket once lived in a guessable directory of the
    temp dir; another user who made it first kept the agent from starting."""
    taken = Path("/tmp") / f"credential-agent-{os.getuid()}"
    made = not taken.exists()
    if made:
        subprocess.run(["mkdir", "-m", "0777", str(taken)], user=other_user.pw_uid, group=other_user.pw_gid,
                       extra_groups=[], check=True)
    a = AgentProcess()
    for var in ("XDG_RUNTIME_DIR", "CREDENTIAL_AGENT_SOCK"):
        a.env.pop(var)
    a.socket = Path(subprocess.run([sys.executable, "-c", "from client import paths; print(paths.socket_file())"],
                                   env=a.env, capture_output=True, text=True, check=True).stdout.strip())
    try:
        assert str(a.socket).startswith(str(a.home)), a.socket  # in the home, which nobody else can write
        a.start()
        with Client(a.socket, timeout=10, autostart=False) as c:
            assert c.hello()
    finally:
        a.cleanup()
        if made:
            shutil.rmtree(taken, ignore_errors=True)


def test_a_runtime_dir_of_another_user_is_not_used(other_user: pwd.struct_passwd) -> None:
    """su keeps the caller's XDG_RUNTIME_DIR: a runtime dir this user does not own is passed over."""
    theirs = short_tmpdir("ca-xdg-")
    os.chown(theirs, other_user.pw_uid, other_user.pw_gid)
    env = {**AgentProcess().env, "XDG_RUNTIME_DIR": str(theirs)}
    env.pop("CREDENTIAL_AGENT_SOCK")
    try:
        where = subprocess.run([sys.executable, "-c", "from client import paths; print(paths.socket_file())"],
                               env=env, capture_output=True, text=True, check=True).stdout.strip()
        assert not where.startswith(str(theirs)), where
    finally:
        shutil.rmtree(theirs, ignore_errors=True)


def test_one_vault_gets_one_agent_whatever_its_runtime_dir() -> None:
    """Cron (no runtime dir) and a login (one) see different sockets but the same vault:
    a second agent on it would seal rows under a key the first has rotated away."""
    first = AgentProcess().start()
    second = AgentProcess(home=first.home, env={"XDG_RUNTIME_DIR": str(first.home / "run2"),
                                                 "CREDENTIAL_AGENT_SOCK": str(first.home / "run2" / "agent.sock")})
    (first.home / "run2").mkdir(mode=0o700)
    try:
        done = subprocess.run(second.command("serve"), env=second.env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0 and "already running" in done.stderr, done
        with first.client(timeout=10) as c:
            assert c.hello()
    finally:
        first.cleanup()


def test_keyrings_config_cannot_put_code_on_the_agents_path(secret_service: SecretService) -> None:
    """keyringrc.cfg's keyring-path goes on sys.path; whoever sets XDG_CONFIG_HOME for the
    shell that starts the agent (a project's .envrc) would choose that file."""
    a = AgentProcess(env={k: v for k, v in secret_service.env.items() if k != "PYTHON_KEYRING_BACKEND"})
    a.env.pop("PYTHON_KEYRING_BACKEND")
    evil = a.home / "project" / "evil"
    (evil / "secretstorage").mkdir(parents=True)
    (evil / "secretstorage" / "__init__.py").write_text(PLANTED)
    cfg = Path(a.env["XDG_CONFIG_HOME"]) / "python_keyring" / "keyringrc.cfg"
    cfg.parent.mkdir(parents=True)
    cfg.write_text(f"[backend]\ndefault-keyring = keyring.backends.SecretService.Keyring\nkeyring-path = {evil}\n")
    a.start()
    try:
        with a.client(timeout=60) as c:
            result = c.init("keyring")
        assert not (a.home / "PLANTED-CODE-RAN").exists(), "keyring-path code ran in the agent"
        assert result["backend"] == "keyring.backends.SecretService.Keyring"  # default-keyring still chooses
    finally:
        a.cleanup()
