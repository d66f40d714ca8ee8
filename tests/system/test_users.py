"""Other users: the agent serves only its own uid, and the client trusts only its own socket.

A real second Unix user is created with useradd when the tests run as root
(skipped, saying so, otherwise); its processes are started with setuid through
``subprocess.Popen(user=..., group=...)``.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess

import pytest

from client import Client, errors
from support import AgentProcess, raw_request
from support.otheruser import other_user, readable_copy, user_python

__all__ = ["other_user"]  # a fixture

# Run by the other user: connect, send one hello, report what came back. Stdlib only.
RAW_PEER = """
import json, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(10)
out = {}
try:
    s.connect(sys.argv[1])
    out["connected"] = True
    s.sendall(bytes.fromhex(sys.argv[2]))
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    out["reply_bytes"] = len(data)
except (ConnectionResetError, BrokenPipeError) as e:
    out["reply_bytes"] = 0  # closed on us before or after the request went out
    out["closed"] = type(e).__name__
except OSError as e:
    out["error"] = type(e).__name__ + ": " + str(e)
print(json.dumps(out))
"""

# Run by the other user with a readable copy of the client library.
CLIENT_PEER = """
import json, sys
from client import Client, errors
try:
    Client(sys.argv[1], autostart=False, timeout=10).hello()
    print(json.dumps({"served": True}))
except errors.AgentError as e:
    print(json.dumps({"code": e.code, "message": e.message}))
"""


def as_user(user: pwd.struct_passwd, code: str, *args: str, env: dict[str, str] | None = None) -> dict[str, object]:
    done = subprocess.run(
        [user_python(user), "-c", code, *args],
        user=user.pw_uid, group=user.pw_gid, extra_groups=[],
        env={"PATH": "/usr/bin:/bin", "HOME": "/", **(env or {})},
        cwd="/", capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout)
    return result


def open_up(a: AgentProcess) -> None:
    """Make the socket and every directory above it reachable by anyone."""
    os.chmod(a.home, 0o755)
    os.chmod(a.socket.parent, 0o777)
    os.chmod(a.socket, 0o666)


def test_agent_refuses_another_user_even_through_a_world_accessible_socket(
    agent: AgentProcess, other_user: pwd.struct_passwd
) -> None:
    with agent.client() as c:
        c.init("passphrase", "pass-for-users-test")
        c.store("alpha", "alpha-value-secret")
    open_up(agent)
    for request in (raw_request("hello"), raw_request("get", {"platform": "alpha"}), raw_request("list")):
        out = as_user(other_user, RAW_PEER, str(agent.socket), request.hex())
        assert out.get("connected") is True, out  # the file system let it in ...
        assert out.get("reply_bytes") == 0, out  # ... the agent did not answer a byte
    assert f"refused a connection from uid {other_user.pw_uid}" in agent.log()
    os.chmod(agent.socket, 0o600)
    os.chmod(agent.socket.parent, 0o700)  # its own client refuses a directory others may write
    with agent.client() as c:  # still serving its own user
        assert c.get("alpha") == "alpha-value-secret"


def test_client_of_another_user_refuses_this_users_socket(
    agent: AgentProcess, other_user: pwd.struct_passwd
) -> None:
    open_up(agent)
    lib = readable_copy("msgpack")
    try:
        out = as_user(other_user, CLIENT_PEER, str(agent.socket),
                      env={"PYTHONPATH": str(lib), "MSGPACK_PUREPYTHON": "1", "PYTHONDONTWRITEBYTECODE": "1"})
    finally:
        shutil.rmtree(lib, ignore_errors=True)
    assert out["code"] == "untrusted_socket", out
    message = str(out["message"])
    assert "owned by uid 0" in message or "not by this user" in message or "other users may replace it" in message


def test_client_refuses_a_socket_owned_by_another_uid(agent: AgentProcess, other_user: pwd.struct_passwd) -> None:
    os.chown(agent.socket, other_user.pw_uid, other_user.pw_gid)  # mode stays 0600
    with pytest.raises(errors.UntrustedSocket, match="owned by uid"):
        Client(agent.socket, autostart=False).hello()
    os.chown(agent.socket, os.getuid(), os.getgid())
    assert Client(agent.socket, autostart=False).hello()


@pytest.mark.parametrize("mode", [0o660, 0o606, 0o640, 0o604, 0o602, 0o620, 0o666])
def test_client_refuses_a_socket_others_may_use(agent: AgentProcess, mode: int) -> None:
    os.chmod(agent.socket, mode)
    with pytest.raises(errors.UntrustedSocket, match=f"{mode:04o}"):
        Client(agent.socket, autostart=False).hello()
    os.chmod(agent.socket, 0o600)
    assert Client(agent.socket, autostart=False).hello()
