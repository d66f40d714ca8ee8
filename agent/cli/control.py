"""``agent serve | start | stop | status``: run the agent, in the foreground or the
background, stop it, and say what state it is in.

Only ``serve`` loads the daemon side (``agent.daemon``, and with it keyring and
cryptography), inside the command: every other command stays a light client.

``serve --detach`` (POSIX) is how a client starts an agent on first use: the process forks,
the child serves (in its own session, its output in the log) and says through a pipe when it
accepts connections, and the parent exits then, or with why the child could not. A first use
costs one interpreter (not ``agent start``'s and its ``serve``'s) and no polling. That path
is ``agent.detach``'s, which a client's autostart runs without this package.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import agent
from agent import detach
from agent.cli._common import CliError, Exit, Subcommands, add_command, duration_arg, older, print_json
from client import Client, config, errors, paths

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Final

__all__ = ["register", "cmd_start", "gone", "START_TIMEOUT"]

# how long `agent start` waits for the new agent to answer, and `agent stop` for it to exit
START_TIMEOUT: Final = detach.START_TIMEOUT


def cmd_serve(args: argparse.Namespace) -> int:
    ready = None
    if getattr(args, "detach", False):
        try:
            ready = detach.fork()  # the child's; in the parent, fork raises why the child does not serve
        except detach.NotServing as e:
            raise CliError(str(e), Exit(e.code)) from None
        if ready is None:  # the parent, once the child serves: as a daemon's parent does, it leaves
            os._exit(Exit.OK)  # without finalizing what the child still uses (and ~4 ms sooner)
    return detach.serve(
        args.log_level,
        ready,
        idle_timeout=getattr(args, "idle_timeout", None),
        max_unlocked=getattr(args, "max_unlocked", None),
    )


def cmd_start(args: argparse.Namespace) -> int:
    import subprocess

    from client import spawn

    path = paths.socket_path()
    if detach.answers(path):
        if not args.quiet:
            print(f"an agent is already running at {path}")
        return Exit.OK
    log_file = paths.log_path()
    paths.ensure_private_dir(log_file.parent)
    fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    offset = os.fstat(fd).st_size  # what this start adds to the log is read back on failure
    # isolated, in /, with a short list of variables: nothing of the caller's directory
    # runs in the agent and none of its secrets (LISTEN_* of a socket-activated parent
    # included) lives on in it
    command = spawn.agent_command("serve", *(["--log-level", args.log_level] if args.log_level else []))
    child = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=fd,
        stderr=fd,
        close_fds=True,
        cwd="/",
        env=spawn.clean_env(aws=True),
        **_detached(),
    )
    os.close(fd)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if detach.answers(path):
            if not args.quiet:
                print(f"agent started at {path} (log: {log_file})")
            return Exit.OK
        code = child.poll()
        if code not in (None, 0):
            raise CliError(f"the agent exited with status {code}: {detach.why_not_started(log_file, offset)}")
        time.sleep(0.02)
    raise CliError(f"the agent did not answer within {START_TIMEOUT:g} s; see {log_file}", Exit.NO_AGENT)


def _detached() -> dict[str, Any]:
    """Popen's way to detach the agent from this terminal: a new session on POSIX; on
    Windows (no fork, no sessions) no console, its own process group (Ctrl+C in this
    console does not reach it)."""
    if sys.platform == "win32":
        import subprocess

        flags = subprocess.DETACHED_PROCESS | subprocess.CREATE_NO_WINDOW | subprocess.CREATE_NEW_PROCESS_GROUP
        return {"creationflags": flags}
    return {"start_new_session": True}


def gone(pid: int, timeout: float) -> bool:
    """Whether process ``pid`` exits within ``timeout`` seconds."""
    if sys.platform == "win32":
        from client import win32

        return win32.wait_exit(pid, timeout)  # os.kill(pid, 0) would terminate it there
    from agent.transport import callers  # here: a process that stops nothing never loads it

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        if callers.exited(pid):  # its parent (a test, a supervisor) has not reaped it yet
            return True
        time.sleep(0.02)
    return False


def cmd_stop(args: argparse.Namespace) -> int:
    path = paths.socket_path()
    try:
        with Client(path, autostart=False) as c:
            pid = c.status()["pid"]
            c.stop()
    except errors.UntrustedSocket:
        raise
    except errors.AgentUnavailable:
        print("no agent is running", file=sys.stderr)
        return Exit.OK
    gone(pid, START_TIMEOUT)
    print(f"agent (pid {pid}) stopped")
    return Exit.OK


def _status_short() -> int:
    """One word (and a count) for a shell prompt: ``unlocked 12``, ``locked``,
    ``uninitialized``, ``none`` (no agent: none is started) or ``refused``."""
    try:
        with Client(paths.socket_file(), timeout=2.0, autostart=False) as c:
            st = c.status()
    except errors.UntrustedSocket:
        print("refused")
        return Exit.ERROR
    except (errors.AgentUnavailable, errors.AgentTimeout):
        print("none")
        return Exit.NO_AGENT
    if not st["initialized"]:
        print("uninitialized")
    elif st["locked"]:
        print("locked")
    else:
        print(f"unlocked {st['credentials']}")
    return Exit.OK


def cmd_status(args: argparse.Namespace) -> int:
    if args.short:
        return _status_short()
    path = paths.socket_path()
    try:
        with Client(path, autostart=False) as c:
            st = c.status()
    except errors.UntrustedSocket as e:
        if args.json:
            print_json({"running": None, "socket": str(path), "refused": e.message})
        else:
            print(f"the socket at {path} was refused: {e.message}")
        return Exit.ERROR
    except errors.AgentUnavailable:
        if args.json:
            print_json({"running": False, "socket": str(path)})
        else:
            print(f"no agent is running at {path}")
        return Exit.NO_AGENT
    st["running"] = True
    if args.json:
        print_json(st)
        return Exit.OK
    state = (
        "not initialised (run `agent init`)"
        if not st["initialized"]
        else ("locked" + (" (by request)" if st["locked_by_user"] else "") if st["locked"] else "unlocked")
    )
    print(f"agent {st['version']} (protocol {st['protocol']}), pid {st['pid']}, up {st['uptime_s']:.0f} s")
    if st["version"] != agent.__version__:
        if older(st["version"], agent.__version__):
            print(f"VERSION:     this command is {agent.__version__}: any other command replaces this older agent")
        else:
            print(f"VERSION:     this command is {agent.__version__}, older: the agent is left as it is")
    print(f"socket:      {st['socket']}")
    print(f"vault:       {st['vault']} ({st['credentials']} credentials, key source {st['key_source'] or '-'})")
    print(f"state:       {state}")
    if st.get("vault_replaced"):
        print(f"VAULT:       the file was {st['vault_replaced']} under this agent: it writes nothing and stays locked;")
        print("             `agent stop`, then `agent start`, to use what is at that path now")
    elif st.get("vault_read_only"):
        print(f"vault:       read-only ({st['vault_read_only']}): stored credentials can be read, not changed")
    print(f"auto-lock:   {_autolock_line(st)}")
    if st.get("access_rules"):
        waiting = st.get("approvals_pending", 0)
        print(f"access:      {st['access_rules']} rules; {waiting} read(s) waiting for `agent approve`")
    if st.get("socket_activated"):
        print("started by:  systemd socket activation")
    hardening = ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in sorted(st["hardening"].items()))
    print(f"hardening:   {hardening}")
    print(f"event loop:  {st['loop']}")
    return Exit.OK


def _autolock_line(st: dict[str, Any]) -> str:
    parts = []
    for key, left, what in (("idle_timeout", "idle_left_s", "idle"), ("max_unlocked", "unlocked_left_s", "max")):
        if st.get(key):
            remaining = "" if st.get(left) is None else f" ({st[left]:.0f} s left)"
            parts.append(f"{what} {st[key]:g} s{remaining}")
    if st.get("unlock_bound_left_s") is not None:
        parts.append(f"unlock --timeout ({st['unlock_bound_left_s']:.0f} s left)")
    if st.get("locks_in_s") is not None:  # the nearest of them, as a time of day
        at = time.localtime(time.time() + st["locks_in_s"])
        return ", ".join(parts) + "; locks at " + time.strftime("%H:%M:%S", at)
    return ", ".join(parts) or "off"


def register(sub: Subcommands) -> None:
    p = add_command(sub, "serve", cmd_serve, "run the agent in the foreground (for systemd/launchd)")
    p.add_argument("--log-level", default=None, choices=config.LOG_LEVELS, help="default: info")
    p.add_argument(
        "--idle-timeout",
        type=duration_arg,
        default=None,
        metavar="DURATION",
        help="lock after this long without credential use: seconds, or e.g. 15m, 1h30m (0 = off)",
    )
    p.add_argument(
        "--max-unlocked",
        type=duration_arg,
        default=None,
        metavar="DURATION",
        help="lock this long after unlocking, whatever the use: seconds, or e.g. 8h (0 = off)",
    )
    if sys.platform != "win32":  # a client's autostart (no fork on Windows: there it runs `agent start`)
        p.add_argument("--detach", action="store_true", help=argparse.SUPPRESS)
    p = add_command(sub, "start", cmd_start, "start the agent in the background (no-op when running)")
    p.add_argument("--log-level", default=None, choices=config.LOG_LEVELS)
    p.add_argument("--quiet", action="store_true", help=argparse.SUPPRESS)
    add_command(sub, "stop", cmd_stop, "stop the running agent")
    p = add_command(sub, "status", cmd_status, "show the agent's state")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--json", action="store_true", help="machine-readable output")
    how.add_argument(
        "--short",
        action="store_true",
        help="one line for a shell prompt: 'unlocked N', 'locked', 'uninitialized' or 'none'; never starts an agent",
    )
