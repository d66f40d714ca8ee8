"""The running agent's version against this command's: an older agent is replaced.

After an upgrade (``scripts/install.sh``, ``pip install -U``) an agent started before it
goes on running the old code: fixes do not reach it, and ops the new commands send are
unknown to it. As rbw does, each command that talks to the agent asks its version first
(one ``hello``, well under a millisecond) and replaces an older agent: it stops it and
starts this version's. An agent holds nothing worth keeping but its unlocked key, so the
one cost is an unlock, which the message names. A newer agent is left alone (an older
command must not downgrade it): the message says which ``agent`` is out of date.
"""

from __future__ import annotations

import argparse
import sys

import agent
from agent.cli._common import older
from client import Client, errors, paths

__all__ = ["SKIP", "ensure_current"]

# commands that do not ask: they run no agent (serve is one), stop it, only look
# (`status`, whose --short never starts or stops anything), or need none
SKIP = frozenset({"serve", "stop", "status", "completion", "man", "service"})


def ensure_current() -> None:
    """Replace a running agent older than this command; warn about a newer one. Quiet when
    none runs, when it answers with this version, or when it cannot be asked."""
    try:
        with Client(paths.socket_file(), timeout=5.0, autostart=False) as c:
            theirs = str(c.hello().get("agent", "unknown"))
            if theirs == agent.__version__:
                return
            status = c.status()
    except errors.AgentError:
        return  # no agent, or one that is not to be trusted: the command itself says so
    ours = agent.__version__
    if not older(theirs, ours):
        print(
            f"agent: the running agent is version {theirs}, newer than this command ({ours}, {sys.argv[0]}); "
            "it is left running: use the newer `agent` command (or reinstall this one)",
            file=sys.stderr,
        )
        return
    _replace(theirs, status)


def _replace(theirs: str, status: dict[str, object]) -> None:
    from agent.cli import control

    pid = status.get("pid")
    try:
        with Client(paths.socket_file(), timeout=5.0, autostart=False) as c:
            c.stop()
    except errors.AgentUnavailable:
        pass  # it stopped meanwhile (another command replaced it)
    if isinstance(pid, int):
        control.gone(pid, control.START_TIMEOUT)
    control.cmd_start(argparse.Namespace(quiet=True, log_level=None))
    said = f"agent: replaced the running agent {theirs} (pid {pid}) with {agent.__version__}"
    if status.get("initialized") and not status.get("locked") and status.get("key_source") == "passphrase":
        said += "; it was unlocked, so the vault is locked now: `agent unlock`"
    print(said, file=sys.stderr)
