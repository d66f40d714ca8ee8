"""Run at login: the systemd units, socket activation, the LaunchAgent, `agent service`.

No user manager runs here, so the units are checked with ``systemd-analyze verify``
and run with ``systemd-socket-activate``, which passes the socket the way systemd
does (LISTEN_FDS=1, LISTEN_PID, fd 3). Every test uses a temp HOME/XDG dirs; a
check at the end proves the real user's unit dirs were not touched.
"""

from __future__ import annotations

import os
import plistlib
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent import service_units
from support import ROOT, AgentProcess, base_env, short_tmpdir

REAL_UNITS = [Path.home() / ".config/systemd/user/credential-agent.socket",
              Path.home() / "Library/LaunchAgents/org.credential-agent.plist"]
REAL_BEFORE = [p.exists() for p in REAL_UNITS]

needs_analyze = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                   reason="systemd-analyze is not installed (Debian package systemd)")
needs_activate = pytest.mark.skipif(shutil.which("systemd-socket-activate") is None,
                                    reason="systemd-socket-activate is not installed (Debian package systemd)")


@pytest.fixture
def home() -> Iterator[Path]:
    h = short_tmpdir()
    yield h
    shutil.rmtree(h, ignore_errors=True)


def cli(home: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agent", *args], env={**base_env(home), **(env or {})},
                          capture_output=True, text=True, timeout=120)


def unit_dir(home: Path) -> Path:
    return home / "config" / "systemd" / "user"


# --- the files ----------------------------------------------------------------------
def test_shipped_files_are_what_install_renders() -> None:
    for rel, text in service_units.shipped().items():
        assert (ROOT / rel).read_text() == text, f"{rel} is stale: regenerate it from service_units.shipped()"


def test_shipped_socket_unit_has_the_documented_settings() -> None:
    text = (ROOT / "systemd/credential-agent.socket").read_text()
    for line in ("ListenStream=%t/credential-agent/agent.sock", "SocketMode=0600", "DirectoryMode=0700"):
        assert line in text.splitlines()
    service = (ROOT / "systemd/credential-agent.service").read_text()
    assert any(line.startswith("ExecStart=") and line.endswith(" serve") for line in service.splitlines())


@pytest.mark.parametrize("path", [ROOT / "launchd/org.credential-agent.plist", None])
def test_launch_agent_plist(path: Path | None, home: Path) -> None:
    if path is None:  # what `agent service install --manager launchd` writes, with this installation's agent
        done = cli(home, "service", "install", "--manager", "launchd")
        assert done.returncode == 0, done.stderr
        path = home / "Library/LaunchAgents/org.credential-agent.plist"
    with open(path, "rb") as f:
        plist = plistlib.load(f)
    assert plist["Label"] == "org.credential-agent"
    args = plist["ProgramArguments"]
    assert args[-1] == "serve" and Path(args[0]).is_absolute()
    assert plist["RunAtLoad"] is True
    assert plist["KeepAlive"] == {"SuccessfulExit": False}  # back after a crash, not after `agent stop`
    assert plist["StandardOutPath"] == plist["StandardErrorPath"]
    assert plist["StandardOutPath"].endswith("/Library/Logs/credential-agent/agent.log")
    if path.is_relative_to(home):
        assert args[:-1] == service_units.agent_command() and Path(args[0]).exists()
        assert Path(plist["StandardOutPath"]).parent.is_dir()  # launchd makes no directories
        assert plist["EnvironmentVariables"].get("PYTHONPATH", str(ROOT)) == str(ROOT)


@needs_analyze
def test_systemd_analyze_verifies_the_installed_units(home: Path) -> None:
    done = cli(home, "service", "install")
    assert done.returncode == 0, done.stderr
    units = [str(unit_dir(home) / f"credential-agent.{kind}") for kind in ("socket", "service")]
    service = Path(units[1]).read_text()
    exec_start = next(line for line in service.splitlines() if line.startswith("ExecStart="))
    assert exec_start == f"ExecStart={shlex.join(service_units.agent_command())} serve"
    for mode in ([], ["--user"]):
        verify = subprocess.run(["systemd-analyze", *mode, "verify", *units], capture_output=True, text=True,
                                timeout=120, env={**os.environ, "XDG_RUNTIME_DIR": str(home)})
        assert verify.returncode == 0, verify.stderr
        assert "credential-agent" not in verify.stderr, verify.stderr  # no warning about our units
    # and the check has teeth: a missing ExecStart binary or a typo fails it
    broken = home / "broken"
    broken.mkdir()
    for name, text in (("credential-agent.service", service.replace("ExecStart=/", "ExecStart=/nonexistent/")),
                       ("credential-agent.socket", Path(units[0]).read_text())):
        (broken / name).write_text(text)
    verify = subprocess.run(["systemd-analyze", "verify", *(str(p) for p in sorted(broken.iterdir()))],
                            capture_output=True, text=True, timeout=120)
    assert verify.returncode != 0 and "not executable" in verify.stderr


# --- agent service install | uninstall | status --------------------------------------------
def test_install_is_idempotent_and_names_the_command_left(home: Path) -> None:
    dry = cli(home, "service", "install", "--dry-run")
    assert dry.returncode == 0 and "would write" in dry.stdout and "ListenStream=" in dry.stdout
    assert not unit_dir(home).exists()

    first = cli(home, "service", "install")
    assert first.returncode == 0, first.stderr
    socket_unit, service_unit = unit_dir(home) / "credential-agent.socket", unit_dir(home) / "credential-agent.service"
    assert f"wrote {socket_unit}" in first.stdout and f"wrote {service_unit}" in first.stdout
    left = "systemctl --user daemon-reload && systemctl --user enable --now credential-agent.socket"
    assert "cannot be reached" in first.stdout and left in first.stdout
    mtimes = [p.stat().st_mtime_ns for p in (socket_unit, service_unit)]

    again = cli(home, "service", "install")
    assert again.returncode == 0 and "wrote" not in again.stdout and f"unchanged {socket_unit}" in again.stdout
    assert [p.stat().st_mtime_ns for p in (socket_unit, service_unit)] == mtimes

    status = cli(home, "service", "status")
    assert status.returncode == 0 and status.stdout.count(": installed") == 2
    service_unit.write_text(service_unit.read_text().replace("RestartSec=1", "RestartSec=9"))
    status = cli(home, "service", "status")
    assert status.returncode == 1 and "differs" in status.stdout
    assert "wrote" in cli(home, "service", "install").stdout  # repaired

    wants = unit_dir(home) / "sockets.target.wants" / "credential-agent.socket"
    wants.parent.mkdir()
    wants.symlink_to(socket_unit)  # as `systemctl --user enable` leaves it
    assert "would remove" in cli(home, "service", "uninstall", "--dry-run").stdout and socket_unit.exists()
    gone = cli(home, "service", "uninstall")
    assert gone.returncode == 0 and f"removed {socket_unit}" in gone.stdout
    assert not socket_unit.exists() and not service_unit.exists() and not wants.is_symlink()
    assert cli(home, "service", "uninstall").stdout.strip() == "nothing installed"
    assert cli(home, "service", "status").returncode == 1


def test_install_follows_the_profile_and_socket(home: Path) -> None:
    done = cli(home, "service", "install", env={"CREDENTIAL_AGENT_PROFILE": "work"})
    assert done.returncode == 0, done.stderr
    text = (unit_dir(home) / "credential-agent-work.service").read_text()
    assert "Environment=CREDENTIAL_AGENT_PROFILE=work" in text
    assert "Requires=credential-agent-work.socket" in text
    # base_env sets CREDENTIAL_AGENT_SOCK: the socket unit listens exactly there
    sock_text = (unit_dir(home) / "credential-agent-work.socket").read_text()
    assert f"ListenStream={home}/run/agent.sock" in sock_text


def test_launchd_install_without_launchctl_names_the_command_left(home: Path) -> None:
    if sys.platform == "darwin":
        pytest.skip("on macOS launchctl is real; this checks the path where it is missing")
    done = cli(home, "service", "install", "--manager", "launchd")
    plist = home / "Library/LaunchAgents/org.credential-agent.plist"
    assert done.returncode == 0 and plist.exists()
    assert f"launchctl bootstrap gui/{os.getuid()} {plist}" in done.stdout
    assert "unchanged" in cli(home, "service", "install", "--manager", "launchd").stdout
    assert cli(home, "service", "uninstall", "--manager", "launchd").returncode == 0 and not plist.exists()


# --- socket activation ------------------------------------------------------------------------
def installed_units(home: Path) -> tuple[Path, list[str], dict[str, str]]:
    """What the installed units say: the socket path, the command, its environment."""
    socket_text = (unit_dir(home) / "credential-agent.socket").read_text()
    service_text = (unit_dir(home) / "credential-agent.service").read_text()
    listen = next(line.split("=", 1)[1] for line in socket_text.splitlines() if line.startswith("ListenStream="))
    command = next(shlex.split(line.split("=", 1)[1]) for line in service_text.splitlines()
                   if line.startswith("ExecStart="))
    env = dict(line.split("=", 1)[1].split("=", 1) for line in service_text.splitlines()
               if line.startswith("Environment="))
    return Path(listen.replace("%t", str(home / "run"))), command, env


class Activator:
    """systemd-socket-activate standing in for the user manager and the socket unit."""

    def __init__(self, home: Path, path: Path, command: list[str], env: dict[str, str]) -> None:
        self.home, self.path = home, path
        self.log = home / "activate.log"
        # the user manager passes its environment (HOME, XDG_*) plus the unit's Environment=
        manager_env = {k: v for k, v in base_env(home).items() if k.startswith(("HOME", "XDG_", "PYTHON_KEYRING"))}
        passed = [f"--setenv={k}={v}" for k, v in {**manager_env, **env}.items()]
        path.parent.mkdir(mode=0o700, exist_ok=True)  # DirectoryMode=0700
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(["systemd-socket-activate", f"--listen={path}", *passed, *command],
                                         env=base_env(home), stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 15
        while not path.exists():
            assert time.monotonic() < deadline, self.log.read_text()
            time.sleep(0.01)
        os.chmod(path, 0o600)  # SocketMode=0600 (systemd-socket-activate has no such option)

    def exe(self) -> str:
        return os.readlink(f"/proc/{self.proc.pid}/exe")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(15)


@pytest.fixture
def activated(home: Path) -> Iterator[Activator]:
    """The installed units, run the way systemd runs them: nothing starts before a connection."""
    assert cli(home, "service", "install").returncode == 0
    path, command, env = installed_units(home)
    a = Activator(home, path, command, {**env, "CREDENTIAL_AGENT_SOCK": str(path)})
    yield a
    a.stop()


def client_for(path: Path):
    from client import Client

    return Client(path, autostart=False, timeout=30)


@needs_activate
def test_first_connection_starts_the_agent_and_is_served(activated: Activator) -> None:
    time.sleep(0.3)
    assert "systemd-socket-activate" in activated.exe()  # no agent yet
    inode = activated.path.stat().st_ino
    with client_for(activated.path) as c:
        st = c.status()  # this very connection starts the agent and gets its answer
    assert st["pid"] == activated.proc.pid and "python" in activated.exe()
    assert st["socket_activated"] is True and st["socket"] == str(activated.path)
    assert stat.S_IMODE(activated.path.stat().st_mode) == 0o600
    assert activated.path.stat().st_ino == inode  # adopted, not rebound
    with client_for(activated.path) as c:
        c.stop()
    assert activated.proc.wait(15) == 0
    # systemd owns the file: the agent neither unlinked nor replaced it
    assert activated.path.exists() and activated.path.stat().st_ino == inode
    log = activated.log.read_text()
    assert "socket passed by systemd" in log and "stale" not in log


@needs_activate
def test_mismatched_listen_pid_is_refused(home: Path) -> None:
    assert cli(home, "service", "install").returncode == 0
    path, command, env = installed_units(home)
    # a wrapper that forks instead of exec'ing: LISTEN_PID names the shell, not the agent
    wrapper = ["/bin/sh", "-c", shlex.join(command) + "; echo wrapper-done"]
    a = Activator(home, path, wrapper, {**env, "CREDENTIAL_AGENT_SOCK": str(path)})
    try:
        inode = path.stat().st_ino
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(str(path))
        assert a.proc.wait(30) == 0  # the wrapper's status; the agent's own is in the log
        s.close()
        log = a.log.read_text()
        assert "is not this process" in log and "refusing the passed socket" in log
        assert "serving on" not in log
        assert path.stat().st_ino == inode  # it did not bind a socket of its own there
    finally:
        a.stop()


def test_a_live_socket_is_never_removed_as_stale(home: Path) -> None:
    agent = AgentProcess(home)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    listener.bind(str(agent.socket))
    os.umask(old)
    listener.listen(8)
    inode = agent.socket.stat().st_ino
    try:
        done = subprocess.run(agent.command("serve"), env=agent.env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 1
        assert "live socket" in done.stderr
        assert agent.socket.stat().st_ino == inode
    finally:
        listener.close()


@needs_activate
def test_a_socket_unit_takes_over_from_a_self_started_agent(home: Path) -> None:
    assert cli(home, "service", "install").returncode == 0
    path, command, env = installed_units(home)
    old = AgentProcess(home)
    old.env["CREDENTIAL_AGENT_SOCK"] = str(path)
    old.socket = path
    path.parent.mkdir(mode=0o700, exist_ok=True)
    old.start()
    path.unlink()  # systemd removes the file before binding its own socket there
    a = Activator(home, path, command, {**env, "CREDENTIAL_AGENT_SOCK": str(path)})
    try:
        assert old.proc is not None and old.proc.wait(15) == 0  # it saw its socket go and stopped
        assert "taken over" in old.log()
        with client_for(path) as c:
            st = c.status()
        assert st["pid"] == a.proc.pid and st["socket_activated"] is True
    finally:
        a.stop()
        old.cleanup()


def test_the_real_users_unit_dirs_were_not_touched() -> None:
    assert [p.exists() for p in REAL_UNITS] == REAL_BEFORE
