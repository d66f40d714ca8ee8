"""Starting an agent on first use, shared by the sync and async clients.

The caller runs ``agent serve --detach`` (on Windows, with no fork, ``agent start``):
it forks, the child serves in its own session and tells its parent through a pipe when
it accepts connections, and the parent exits then, or with why not. That is one new
interpreter and no polling; ``agent start`` would cost a second interpreter and polls
the socket.

The race between several first callers is settled by the agent itself: the servers
contend for one exclusive flock and all but one exit at once ("already running"); the
parent of a loser waits until the winner answers. So eight callers at the same moment
end with exactly one agent.
"""

from __future__ import annotations

import os

from client import _profile

__all__ = ["enabled", "unavailable_message", "start_agent", "NO_AUTOSTART"]

NO_AUTOSTART = "CREDENTIAL_AGENT_NO_AUTOSTART"  # client.config's KEYS["autostart"].env (a test holds them equal)


def enabled(explicit: bool | None = None) -> bool:
    """The caller's choice > CREDENTIAL_AGENT_NO_AUTOSTART > the config file's ``autostart`` > on."""
    if explicit is None and not os.environ.get(NO_AUTOSTART) and not _profile.config_may_exist():
        return True  # the common case, certainly the default: no import (client.config's re, pathlib: ~7 ms)
    from client import config

    return bool(config.setting("autostart", explicit))


def unavailable_message(path: object) -> str:
    """What to tell a caller when no agent answers and autostart is off."""
    return (
        f"no credential agent at {path} and autostart is off (CREDENTIAL_AGENT_NO_AUTOSTART or "
        "`autostart = false` in the config file); start one with `agent start`, "
        "or `agent service install` to have one at every login"
    )


def start_agent(timeout: float, unlock: bool = False) -> str | None:
    """Start an agent; None once one serves, else why not (the last line the command
    said on stderr: a full disk, a bad config file). ``unlock``: the first request needs
    the key (``spawn.detach_command``)."""
    import sys

    from client import spawn

    command = ("start", "--quiet") if sys.platform == "win32" else ("serve", "--detach")
    argv = spawn.agent_command(*command) if sys.platform == "win32" else spawn.detach_command(unlock)
    if spawn.lets_go(argv) and hasattr(os, "posix_spawn"):
        done = _spawned(argv, timeout)
    else:
        done = _run(argv, timeout)
    if isinstance(done, str):
        return f"`agent {command[0]}` {done}"
    code, said = done
    if code == 0:
        return None
    lines = [line for line in said.decode(errors="replace").splitlines() if line.strip()]
    return lines[-1].removeprefix("agent: ") if lines else f"`agent {command[0]}` exited with status {code}"


def _run(argv: list[str], timeout: float) -> tuple[int, bytes] | str:
    """Run ``argv`` to its end: its exit code and what it said on stderr, or why it could not."""
    import subprocess

    from client import spawn

    try:
        # isolated, in /, with a short list of variables (see client.spawn)
        done = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=timeout,
            check=False,
            cwd="/",
            env=spawn.clean_env(aws=True),
        )
    except subprocess.TimeoutExpired:
        return f"did not finish within {timeout:g} s"
    except OSError as e:
        return f"could not run: {e.strerror or type(e).__name__}"
    return done.returncode, done.stderr


def _spawned(argv: list[str], timeout: float) -> tuple[int, bytes] | str:
    """``_run`` through ``os.posix_spawn``: ``import subprocess`` alone is ~12 ms of a first use.
    What ``subprocess.run`` did besides is done here or by the command: stdin and stdout are
    /dev/null, stderr is read; the working directory and the descriptors this process leaves
    inheritable are the new interpreter's first lines to let go of (client.spawn)."""
    import contextlib
    import select
    import sys
    import time

    from client import spawn

    if sys.platform == "win32":  # no posix_spawn there (start_agent runs subprocess)
        raise NotImplementedError("posix_spawn")

    read_end, write_end = os.pipe()
    try:
        actions = [
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
            (os.POSIX_SPAWN_DUP2, write_end, 2),
        ]
        pid = os.posix_spawn(argv[0], argv, spawn.clean_env(aws=True), file_actions=actions)
    except OSError as e:
        os.close(read_end)
        return f"could not run: {e.strerror or type(e).__name__}"
    finally:
        os.close(write_end)
    said: list[bytes] = []
    deadline = time.monotonic() + timeout
    poller = select.poll()  # not select(): this process may hold descriptors past 1024
    poller.register(read_end, select.POLLIN)
    try:
        while True:  # until every copy of stderr is closed: the command has finished
            left = deadline - time.monotonic()
            if left <= 0 or not poller.poll(max(1, round(left * 1000))):
                raise TimeoutError
            chunk = os.read(read_end, 65536)
            if not chunk:
                break
            said.append(chunk)
    except BaseException as e:  # the timeout, or KeyboardInterrupt: as subprocess.run, kill and reap it
        os.kill(pid, 9)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
        if isinstance(e, TimeoutError):
            return f"did not finish within {timeout:g} s"
        raise
    finally:
        os.close(read_end)
    try:
        code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    except ChildProcessError:  # this process reaps its children itself (SIGCHLD ignored): as subprocess does
        code = 0
    return code, b"".join(said)
