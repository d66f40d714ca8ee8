"""Test support: real agent processes on real sockets, a real Secret Service.

Nothing here mocks the agent or the keystore: ``AgentProcess`` runs ``python -m
agent serve`` in a short private temp dir; ``SecretService`` runs dbus-daemon and
gnome-keyring-daemon on a private session bus (the recipe of
shared/ref/secretservice.sh, in Python).

The package holds every helper the suites share, one of each kind:

- ``terminal``: the pty driver (``Terminal``; ``AgentProcess.terminal`` opens one);
- ``openbao``: real OpenBao nodes (a dev node, a Raft cluster), the stand-ins in front
  of them (``Relay``, ``Silent``) and the agent with a team remote (``start_team_agent``);
- ``otheruser``: a real second Unix user and a copy of this checkout it may run;
- ``loadwork``: the load test's worker, in threads or as a script.

The tests import it as ``support`` (tests/conftest.py puts tests/ on sys.path; pytest
imports the test modules in importlib mode, so the folders agent/ and client/ never
shadow the packages).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import msgpack

from support.terminal import Terminal

ROOT = Path(__file__).resolve().parent.parent.parent
PASSPHRASE = "correct horse battery staple"
# What the agents started here listen on: the contract suites run over it.
TRANSPORT = "pipe" if sys.platform == "win32" else "unix"


def short_tmpdir(prefix: str = "ca-") -> Path:
    """A private dir with a short path (sun_path is 108 bytes)."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir=None if sys.platform == "win32" else "/tmp"))


def endpoint(home: Path) -> str:
    """Where the agent living in ``home`` listens: a socket in it, or (Windows) a pipe
    named after it."""
    if TRANSPORT == "pipe":
        return f"\\\\.\\pipe\\credential-agent-test-{home.name}"
    return str(home / "run" / "agent.sock")


def base_env(home: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """An environment that confines every path of the agent and client to ``home``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CREDENTIAL_AGENT_", "XDG_", "LISTEN_"))}
    env.pop("DBUS_SESSION_BUS_ADDRESS", None)
    env.update(
        {
            "HOME": str(home),
            "XDG_RUNTIME_DIR": str(home / "run"),
            "XDG_DATA_HOME": str(home / "data"),
            "XDG_CONFIG_HOME": str(home / "config"),
            "XDG_STATE_HOME": str(home / "state"),
            "XDG_CACHE_HOME": str(home / "cache"),
            "CREDENTIAL_AGENT_SOCK": endpoint(home),
            # platformdirs' roots on Windows
            "LOCALAPPDATA": str(home / "data"),
            "APPDATA": str(home / "config"),
            "CREDENTIAL_AGENT_NO_AUTOSTART": "1",
            # tests that want a keystore opt in (the secret_service fixture); the
            # rest must never reach one, so any attempt fails loudly
            "PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring",
            "PYTHONPATH": str(ROOT),
            "PYTHONDONTWRITEBYTECODE": "1",
        }
    )
    (home / "run").mkdir(mode=0o700, exist_ok=True)
    if extra:
        env.update(extra)
    return env


@contextlib.contextmanager
def vault_store(home: Path) -> Iterator[Any]:
    """The vault of the agent living in ``home``, opened with the agent's own store
    (what a restarted agent would read)."""
    from agent.stores.sqlite import SqliteStore

    store = SqliteStore(home / "data" / "credential-agent" / "vault.sqlite3")
    try:
        yield store
    finally:
        store.close()


def until(check: Any, timeout: float, what: str, step: float = 0.1) -> Any:
    """Poll ``check()`` until it returns something true (exceptions count as not yet)."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except Exception as e:
            last = e
        time.sleep(step)
    raise AssertionError(f"{what} did not happen within {timeout} s (last error: {last!r})")


def raw_request(op: str, args: Mapping[str, Any] | None = None, v: int = 1) -> bytes:
    body = msgpack.packb({"v": v, "op": op, "args": dict(args or {})}, use_bin_type=True)
    return len(body).to_bytes(4, "big") + body


def connect(a: AgentProcess) -> socket.socket:
    """A raw connection to the agent's socket (no client in the way)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect(str(a.socket))
    return s


def read_reply(s: socket.socket) -> dict[str, Any]:
    """One reply frame off a raw connection, decoded."""
    header = b""
    while len(header) < 4:
        chunk = s.recv(4 - len(header))
        if not chunk:
            raise ConnectionError("closed")
        header += chunk
    n = int.from_bytes(header, "big")
    body = b""
    while len(body) < n:
        chunk = s.recv(n - len(body))
        if not chunk:
            raise ConnectionError("closed")
        body += chunk
    return msgpack.unpackb(body, raw=False)


class AgentProcess:
    """One ``agent serve`` process with its own home, socket and vault."""

    def __init__(self, home: Path | None = None, env: Mapping[str, str] | None = None) -> None:
        self.home = home or short_tmpdir()
        self.env = base_env(self.home, env)
        self.socket = Path(self.env["CREDENTIAL_AGENT_SOCK"])
        self.log_path = self.home / "agent.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "agent", *args]

    def start(self, *args: str, wait: bool = True, timeout: float = 15.0) -> AgentProcess:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            self.command("serve", "--log-level", "debug", *args),
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
        log.close()
        if wait:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"agent exited with {self.proc.returncode}:\n{self.log()}")
            # a pipe is not stat'ed: opening it is a connection
            if TRANSPORT == "pipe" or self.socket.exists():
                with contextlib.suppress(OSError):
                    with self.client(timeout=2) as c:
                        c.hello()
                        return
            time.sleep(0.01)
        raise RuntimeError(f"agent did not answer within {timeout} s:\n{self.log()}")

    def client(self, **kw: Any) -> Any:
        from client import Client

        kw.setdefault("autostart", False)
        return Client(self.socket, **kw)

    def cli(self, *args: str, input: str | None = None, timeout: float = 30.0,
            env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.command(*args),
            env={**self.env, **(env or {})},
            input=input if input is not None else "",
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def terminal(self, *args: str, env: Mapping[str, str] | None = None) -> Terminal:
        """``agent ARGS`` on a real pty, as a person at a terminal runs it (``cli`` is the scripted way)."""
        return Terminal(self.command(*args), {**self.env, **(env or {})})

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 15.0) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        if sys.platform == "win32":  # SIGTERM there is TerminateProcess: ask the agent instead
            with contextlib.suppress(Exception), self.client(timeout=5) as c:
                c.stop()
        else:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.home, ignore_errors=True)

    def init_passphrase(self, passphrase: str = PASSPHRASE) -> None:
        with self.client(timeout=30) as c:
            c.init("passphrase", passphrase)


# --- a real Secret Service ------------------------------------------------------------
class SecretServiceUnavailable(Exception):
    pass


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state not in ("Z", "X")


class SecretService:
    """dbus-daemon + gnome-keyring-daemon on a private bus, stopped by recorded pid."""

    def __init__(self, password: str = "test") -> None:
        self.dir = short_tmpdir("ss-")
        self.password = password
        self.bus = f"unix:path={self.dir}/run/bus"
        self.dbus_pid: int | None = None
        self.gkd_pid: int | None = None

    @property
    def env(self) -> dict[str, str]:
        return {
            "DBUS_SESSION_BUS_ADDRESS": self.bus,
            "PYTHON_KEYRING_BACKEND": "keyring.backends.SecretService.Keyring",
        }

    def _daemon_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "GNOME_KEYRING_CONTROL")}
        env.update({"XDG_RUNTIME_DIR": str(self.dir / "run"), "XDG_DATA_HOME": str(self.dir / "data"),
                    "DBUS_SESSION_BUS_ADDRESS": self.bus})
        return env

    def _bus_call(self, *args: str) -> str:
        done = subprocess.run(
            ["dbus-send", "--session", "--print-reply=literal", "--reply-timeout=2000", *args],
            env=self._daemon_env(), capture_output=True, text=True, timeout=10,
        )
        return done.stdout.strip() if done.returncode == 0 else ""

    def start(self, timeout: float = 15.0) -> SecretService:
        for tool in ("dbus-daemon", "gnome-keyring-daemon", "dbus-send"):
            if shutil.which(tool) is None:
                raise SecretServiceUnavailable(f"{tool} is not installed (Debian: dbus-daemon dbus-bin gnome-keyring)")
        for sub in ("run", "data"):
            (self.dir / sub).mkdir(mode=0o700)
        env = self._daemon_env()
        out = subprocess.run(
            ["dbus-daemon", "--session", "--fork", "--nopidfile", f"--address={self.bus}", "--print-pid=1"],
            env=env, capture_output=True, text=True, timeout=timeout,
        )
        if out.returncode != 0:
            raise SecretServiceUnavailable(f"dbus-daemon failed: {out.stderr.strip()}")
        self.dbus_pid = int(out.stdout.split()[0])
        # --unlock reads the password from stdin without a newline and exits 0 even on failure
        subprocess.run(
            ["gnome-keyring-daemon", "--daemonize", "--unlock", "--components=secrets"],
            env=env, input=self.password, capture_output=True, text=True, timeout=timeout,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            reply = self._bus_call("--dest=org.freedesktop.DBus", "/org/freedesktop/DBus",
                                   "org.freedesktop.DBus.NameHasOwner", "string:org.freedesktop.secrets")
            if reply.replace(" ", "") == "booleantrue":
                break
            time.sleep(0.05)
        reply = self._bus_call("--dest=org.freedesktop.DBus", "/org/freedesktop/DBus",
                               "org.freedesktop.DBus.GetConnectionUnixProcessID", "string:org.freedesktop.secrets")
        if not reply:
            self.stop()
            raise SecretServiceUnavailable("org.freedesktop.secrets never appeared on the private bus")
        self.gkd_pid = int(reply.split()[-1])
        locked = self._bus_call("--dest=org.freedesktop.secrets", "/org/freedesktop/secrets/aliases/default",
                                "org.freedesktop.DBus.Properties.Get", "string:org.freedesktop.Secret.Collection",
                                "string:Locked")
        if " ".join(locked.split()) != "variant boolean false":
            self.stop()
            raise SecretServiceUnavailable(f"the default collection is missing or locked: {locked!r}")
        return self

    def check(self) -> None:
        """A real keyring round trip in a subprocess (the backend naming itself proves nothing)."""
        code = (
            "import keyring, keyring.backends.SecretService as ss\n"
            "kr = keyring.get_keyring(); assert isinstance(kr, ss.Keyring), kr\n"
            "keyring.set_password('ca-check', 'u', 'p\\u00e9')\n"
            "assert keyring.get_password('ca-check', 'u') == 'p\\u00e9'\n"
            "keyring.delete_password('ca-check', 'u')\n"
        )
        done = subprocess.run([sys.executable, "-c", code], env={**os.environ, **self.env},
                              capture_output=True, text=True, timeout=30)
        if done.returncode != 0:
            raise SecretServiceUnavailable(f"keyring round trip failed: {done.stderr.strip()[-500:]}")

    def pause(self) -> None:
        assert self.gkd_pid is not None
        os.kill(self.gkd_pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.gkd_pid is not None
        os.kill(self.gkd_pid, signal.SIGCONT)

    def _stop_pid(self, pid: int | None) -> None:
        if pid is None or not _alive(pid):
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
            os.kill(pid, signal.SIGCONT)  # a stopped daemon cannot act on TERM
        for _ in range(150):
            if not _alive(pid):
                return
            time.sleep(0.02)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)

    def stop(self) -> None:
        self._stop_pid(self.gkd_pid)
        self._stop_pid(self.dbus_pid)
        self.gkd_pid = self.dbus_pid = None
        shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def running_agent(env: Mapping[str, str] | None = None, *args: str) -> Iterator[AgentProcess]:
    a = AgentProcess(env=env).start(*args)
    try:
        yield a
    finally:
        a.cleanup()
