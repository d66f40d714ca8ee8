"""The units that run the agent at login, and the calls to the service manager that
load them (``agent service`` in ``agent.cli.service`` is their command line).

- Linux: systemd user units. ``credential-agent.socket`` listens on the socket
  path clients use and starts ``credential-agent.service`` (``agent serve``) on
  the first connection; the service adopts the socket (``agent.daemon``).
- macOS: a LaunchAgent that runs ``agent serve`` at login and after a crash,
  loaded with ``launchctl bootstrap gui/<uid>`` (the user's GUI domain).
- Windows: a Task Scheduler task with a logon trigger for this user only, run with
  the user's own token at least privilege; it runs ``pythonw -I ... agent start``
  (no console window; ``agent start`` detaches the agent). A task carries no
  environment, so a profile or a chosen socket/config cannot be installed there.

Rules of this module:
- library code: it prints nothing and never exits; a failure is a ``ServiceError``;
- the units name this installation's ``agent`` by absolute path (the console
  script beside this interpreter, else ``python -m agent``), so they keep
  working whatever PATH a login session has;
- ``render_*`` are pure; the files in the repository's ``systemd/`` and
  ``launchd/`` are their output for the shipped default command (a test keeps
  them equal), so there is one source of truth;
- cheap to import: the CLI imports it on every run to register ``agent service``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from client import config, paths

__all__ = [
    "ServiceError",
    "MANAGERS",
    "agent_command",
    "service_env",
    "render_socket",
    "render_service",
    "render_plist",
    "render_task",
    "task_command",
    "schtasks_create",
    "systemd_exec",
    "unit_name",
    "label",
    "listen_stream",
    "launchd_log",
    "Plan",
    "plan",
    "default_manager",
    "manager_reachable",
    "run",
    "launchd_loaded",
    "write",
    "read",
    "LABEL",
    "SHIPPED_SYSTEMD_EXEC",
    "SHIPPED_LAUNCHD_HOME",
    "shipped",
]

LABEL = "org.credential-agent"
# What the repository's unit files run: the link scripts/install.sh creates.
SHIPPED_SYSTEMD_EXEC = "%h/.local/bin/agent"
SHIPPED_LAUNCHD_HOME = Path("/Users/USERNAME")
MANAGER_TIMEOUT = 20.0
MANAGERS: Final = ("systemd", "launchd", "schtasks")
# schtasks /TR is limited to 261 characters; the XML form (/XML) has no such limit.
TASK_XML_NAME: Final = "logon-task.xml"


class ServiceError(Exception):
    """No service manager support on this platform, or a manager command that could not run."""


# --- what to run ----------------------------------------------------------------------
def agent_command() -> list[str]:
    """Absolute argv that runs this installation's ``agent``."""
    script = Path(sys.executable).parent / "agent"  # the console script of this venv
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script.absolute())]
    return [str(Path(sys.executable).absolute()), "-m", "agent"]


def service_env(command: Sequence[str]) -> dict[str, str]:
    """Environment the service needs to find this installation and this profile."""
    env = {}
    if command[1:2] == ["-m"]:
        import sysconfig

        import agent

        root = str(Path(agent.__file__).resolve().parent.parent)
        site = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
        if root not in {str(Path(p).resolve()) for p in site}:
            env["PYTHONPATH"] = root  # a checkout run in place, not an installed package
    for name in ("CREDENTIAL_AGENT_PROFILE", "CREDENTIAL_AGENT_SOCK", "CREDENTIAL_AGENT_CONFIG"):
        if os.environ.get(name):
            env[name] = os.environ[name]
    return env


def unit_name() -> str:
    return paths.app_name()  # credential-agent, or credential-agent-PROFILE


def label() -> str:
    p = paths.profile()
    return f"{LABEL}.{p}" if p else LABEL


# --- rendering (pure) -----------------------------------------------------------------
def _systemd_word(arg: str) -> str:
    """One ExecStart/Environment word: % doubled, quoted when it holds spaces or quotes."""
    arg = arg.replace("%", "%%")
    if arg and not any(c in arg for c in " \t\"'\\;$"):
        return arg
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"').replace("$", "$$") + '"'


def systemd_exec(command: Sequence[str]) -> str:
    return " ".join(_systemd_word(a) for a in command)


def listen_stream() -> str:
    """The socket unit's path: the one clients compute, in systemd's %t form when it can be."""
    explicit = os.environ.get("CREDENTIAL_AGENT_SOCK") or config.file_value(paths.config_path(), "socket")
    if explicit:
        return str(explicit).replace("%", "%%")
    return f"%t/{paths.app_name()}/agent.sock"


def render_socket(name: str, listen: str) -> str:
    return f"""\
# {name}.socket: listens on the agent's socket and starts {name}.service on
# the first connection. Written by `agent service install`.
[Unit]
Description=Credential agent socket (API keys for connectors)

[Socket]
ListenStream={listen}
SocketMode=0600
DirectoryMode=0700
RemoveOnStop=yes

[Install]
WantedBy=sockets.target
"""


def render_service(name: str, exec_start: str, env: dict[str, str]) -> str:
    environment = "".join(f"Environment={_systemd_word(f'{k}={v}')}\n" for k, v in sorted(env.items()))
    return f"""\
# {name}.service: the credential agent, started by {name}.socket on first use.
# Written by `agent service install`; `agent serve` adopts the socket systemd passes.
[Unit]
Description=Credential agent for API keys
Requires={name}.socket
After={name}.socket

[Service]
Type=simple
ExecStart={exec_start} serve
{environment}Restart=on-failure
RestartSec=1
UMask=0077
LimitCORE=0
NoNewPrivileges=yes

[Install]
Also={name}.socket
"""


def launchd_log(home: Path, app: str) -> Path:
    return home / "Library" / "Logs" / app / "agent.log"  # platformdirs' user_log_dir on macOS


def render_plist(label: str, command: Sequence[str], env: dict[str, str], log: Path) -> str:
    import plistlib

    data: dict[str, object] = {
        "Label": label,
        "ProgramArguments": [*command, "serve"],
        "RunAtLoad": True,
        # back after a crash, but `agent stop` (exit 0) is respected
        "KeepAlive": {"SuccessfulExit": False},
        "ProcessType": "Background",
        "StandardOutPath": str(log),
        "StandardErrorPath": str(log),
    }
    if env:
        data["EnvironmentVariables"] = dict(sorted(env.items()))
    return plistlib.dumps(data, sort_keys=False).decode()


def task_command(executable: str, root: str | None) -> list[str]:
    """What the logon task runs: ``agent start --quiet`` on ``pythonw`` (no console
    window), isolated, on this installation's code, as ``client.spawn`` runs it."""
    import ntpath

    from client import spawn

    if root is None:
        return spawn.agent_command("start", "--quiet")  # the installed script, by absolute path
    folder, name = ntpath.split(executable)
    windowless = ntpath.join(folder, "pythonw.exe") if name.lower() == "python.exe" else executable
    return spawn.isolated_command(windowless, root, "start", "--quiet")


def render_task(name: str, command: Sequence[str], user: str) -> str:
    """The Task Scheduler task (XML, schema 1.2): at ``user``'s logon only, with that
    user's token, least privilege, no time limit, one instance."""
    import subprocess as _sp
    from xml.sax.saxutils import escape

    return f"""\
<?xml version="1.0" encoding="UTF-16"?>
<Task version="1.2" xmlns="http://schemas.microsoft.com/windows/2004/02/mit/task">
  <RegistrationInfo>
    <Description>{escape(name)}: the credential agent for API keys. Written by `agent service install`.</Description>
  </RegistrationInfo>
  <Triggers>
    <LogonTrigger>
      <Enabled>true</Enabled>
      <UserId>{escape(user)}</UserId>
    </LogonTrigger>
  </Triggers>
  <Principals>
    <Principal id="Author">
      <UserId>{escape(user)}</UserId>
      <LogonType>InteractiveToken</LogonType>
      <RunLevel>LeastPrivilege</RunLevel>
    </Principal>
  </Principals>
  <Settings>
    <MultipleInstancesPolicy>IgnoreNew</MultipleInstancesPolicy>
    <DisallowStartIfOnBatteries>false</DisallowStartIfOnBatteries>
    <StopIfGoingOnBatteries>false</StopIfGoingOnBatteries>
    <ExecutionTimeLimit>PT0S</ExecutionTimeLimit>
    <Hidden>true</Hidden>
  </Settings>
  <Actions Context="Author">
    <Exec>
      <Command>{escape(command[0])}</Command>
      <Arguments>{escape(_sp.list2cmdline(list(command[1:])))}</Arguments>
    </Exec>
  </Actions>
</Task>
"""


def schtasks_create(task: str, xml_path: Path) -> list[str]:
    return ["schtasks", "/Create", "/F", "/TN", task, "/XML", str(xml_path)]


def _windows_user() -> str:
    domain, user = os.environ.get("USERDOMAIN", ""), os.environ.get("USERNAME", "")
    if not user:
        raise ServiceError("USERNAME is not set: cannot name the user the logon task is for")
    return f"{domain}\\{user}" if domain else user


def shipped() -> dict[str, str]:
    """The repository's unit files (relative path -> contents): the defaults, for reading
    or installing by hand; `agent service install` writes the same with real paths."""
    app, home = paths.APP, SHIPPED_LAUNCHD_HOME
    return {
        f"systemd/{app}.socket": render_socket(app, f"%t/{app}/agent.sock"),
        f"systemd/{app}.service": render_service(app, SHIPPED_SYSTEMD_EXEC, {}),
        f"launchd/{LABEL}.plist": render_plist(LABEL, [str(home / ".local/bin/agent")], {}, launchd_log(home, app)),
    }


# --- the plan for this machine ------------------------------------------------------------
@dataclass(frozen=True)
class Plan:
    manager: str  # "systemd" | "launchd"
    files: dict[Path, str]  # path -> contents
    enable: list[list[str]]  # commands that load and start the units
    disable: list[list[str]]  # commands that stop and unload them
    wants: list[Path]  # links `systemctl enable` makes (removed by uninstall without a manager)


def systemd_user_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME", "").strip() or os.path.expanduser("~/.config")
    return Path(base) / "systemd" / "user"


def launch_agents_dir() -> Path:
    return Path.home() / "Library" / "LaunchAgents"


def default_manager() -> str:
    if sys.platform == "win32":
        return "schtasks"
    if sys.platform == "darwin":
        return "launchd"
    if sys.platform.startswith("linux"):
        return "systemd"
    raise ServiceError(f"no service manager support on {sys.platform}; run `agent start` at login")


def plan(manager: str, command: Sequence[str] | None = None) -> Plan:
    command = list(command or agent_command())
    env = service_env(command)
    name = unit_name()
    if manager == "systemd":
        d = systemd_user_dir()
        sock, svc = f"{name}.socket", f"{name}.service"
        return Plan(
            manager,
            {d / sock: render_socket(name, listen_stream()), d / svc: render_service(name, systemd_exec(command), env)},
            [["systemctl", "--user", "daemon-reload"], ["systemctl", "--user", "enable", "--now", sock]],
            [["systemctl", "--user", "disable", "--now", sock, svc], ["systemctl", "--user", "daemon-reload"]],
            [d / "sockets.target.wants" / sock],
        )
    if manager == "schtasks":
        return _schtasks_plan()
    plist = launch_agents_dir() / f"{label()}.plist"
    domain = launchd_domain()
    return Plan(
        manager,
        {plist: render_plist(label(), command, env, launchd_log(Path.home(), paths.app_name()))},
        [["launchctl", "bootstrap", domain, str(plist)]],
        [["launchctl", "bootout", f"{domain}/{label()}"]],
        [],
    )


def _schtasks_plan() -> Plan:
    if any(os.environ.get(n) for n in ("CREDENTIAL_AGENT_PROFILE", "CREDENTIAL_AGENT_SOCK", "CREDENTIAL_AGENT_CONFIG")):
        raise ServiceError(
            "a Windows logon task carries no environment: CREDENTIAL_AGENT_PROFILE, "
            "CREDENTIAL_AGENT_SOCK and CREDENTIAL_AGENT_CONFIG cannot be installed with it; "
            "unset them, or run `agent start` from a logon script of your own"
        )
    from client import spawn

    task = unit_name()
    xml = paths.config_dir() / TASK_XML_NAME
    command = task_command(sys.executable, spawn.code_root())
    return Plan(
        "schtasks",
        {xml: render_task(task, command, _windows_user())},
        [schtasks_create(task, xml), ["schtasks", "/Run", "/TN", task]],
        [["schtasks", "/Delete", "/F", "/TN", task]],
        [],
    )


def launchd_domain() -> str:
    """The user's GUI domain, where a LaunchAgent is bootstrapped (``gui/<uid>``)."""
    if sys.platform == "win32":
        raise ServiceError("launchd exists on macOS only")
    return f"gui/{os.getuid()}"


# --- talking to the service manager ------------------------------------------------------
def manager_reachable(manager: str) -> str | None:
    """None when the manager answers; otherwise why not (said to the user)."""
    tool = {"systemd": "systemctl", "launchd": "launchctl"}.get(manager, manager)
    if shutil.which(tool) is None:
        return f"{tool} is not installed here"
    if manager == "systemd":
        probe = ["systemctl", "--user", "show-environment"]
    elif manager == "schtasks":
        probe = ["schtasks", "/Query", "/FO", "LIST"]
    else:
        probe = ["launchctl", "print", launchd_domain()]
    try:
        done = _quiet(probe)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"{' '.join(probe)} failed: {e}"
    if done.returncode != 0:
        why = (done.stderr or done.stdout).strip().splitlines()
        return f"`{' '.join(probe)}` failed: {why[-1] if why else f'exit {done.returncode}'}"
    return None


def _quiet(command: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=MANAGER_TIMEOUT, stdin=subprocess.DEVNULL)


def run(command: list[str]) -> subprocess.CompletedProcess[str]:
    """One manager command, its output captured; ``ServiceError`` when it cannot run or times out."""
    try:
        return _quiet(command)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise ServiceError(f"{command[0]} failed: {e}") from None


def launchd_loaded() -> bool:
    return run(["launchctl", "print", f"{launchd_domain()}/{label()}"]).returncode == 0


def task_registered() -> bool:
    return run(["schtasks", "/Query", "/TN", unit_name()]).returncode == 0


# --- the unit files -------------------------------------------------------------------------
def _encoding(path: Path) -> str:
    # schtasks /XML reads UTF-16 (with its BOM, which Python's codec writes)
    return "utf-16" if path.suffix == ".xml" else "utf-8"


def write(path: Path, text: str) -> None:
    """Replace a unit file whole (a reader sees the old file or the new one, never half)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding=_encoding(path)) as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def read(path: Path) -> str | None:
    """A unit file's text; None when there is none."""
    try:
        return path.read_text(encoding=_encoding(path))
    except FileNotFoundError:
        return None
