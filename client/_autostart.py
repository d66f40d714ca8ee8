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
    import subprocess
    import sys

    from client import spawn

    command = ("start", "--quiet") if sys.platform == "win32" else ("serve", "--detach")
    argv = spawn.agent_command(*command) if sys.platform == "win32" else spawn.detach_command(unlock)
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
        return f"`agent {command[0]}` did not finish within {timeout:g} s"
    except OSError as e:
        return f"`agent {command[0]}` could not run: {e.strerror or type(e).__name__}"
    if done.returncode == 0:
        return None
    said = [line for line in done.stderr.decode(errors="replace").splitlines() if line.strip()]
    return said[-1].removeprefix("agent: ") if said else f"`agent {command[0]}` exited with status {done.returncode}"
