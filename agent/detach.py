"""``agent serve --detach`` without the command line: what a client's autostart runs.

Rules of this module:
- it is the whole of ``serve --detach`` (``agent.cli.control`` runs the same ``fork``): the
  process forks, the child serves in its own session with its output in the log and says
  through a pipe when it accepts connections, and the parent exits then, or with why not;
- it never imports ``agent.cli``, argparse or the client's ``Client`` before the fork
  succeeds: what a first use waits for is this interpreter's start and the agent's own
  imports, and the CLI (its parser module, argparse, the version check's client, ~5 ms)
  is none of them;
- a failure is said as the CLI says it (``agent: MESSAGE`` on stderr) with the exit code
  ``agent serve --detach`` gives it: the client shows that line;
- ``--unlock`` (which only a client's autostart passes, and only here: the CLI has no such
  flag) says the request the agent is started for needs the key: a keystore vault's key is
  then read by a helper while the agent loads (``agent.keys.early``), and it unlocks as it
  serves.
"""

from __future__ import annotations

import gc
import os
import sys
import time

from client import errors, paths

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path
    from typing import Final

__all__ = ["main", "spawned", "fork", "NotServing", "answers", "why_not_started", "START_TIMEOUT", "ERROR", "NO_AGENT"]

# how long a start waits for the new agent to answer (and `agent stop` for it to exit)
START_TIMEOUT: Final = 10.0
# agent.cli._common.Exit's codes for the two failures said here (a test holds them equal)
ERROR: Final = 1
NO_AGENT: Final = 4
# less free space than this where the vault or the log lives: a start that logged nothing failed for it
FULL_DISK: Final = 64 * 1024


class NotServing(Exception):
    """The agent could not be started; ``code`` is the exit code."""

    def __init__(self, message: str, code: int = ERROR) -> None:
        super().__init__(message)
        self.code = code


def spawned() -> int:
    """``main`` as a client's autostart runs it (``client.spawn.detach_command``), through
    ``os.posix_spawn``, which hands on the caller's working directory and every descriptor
    it left inheritable: let go of them first, as subprocess would have."""
    from agent import hardening

    os.chdir("/")
    hardening.close_inherited()
    return main()


def main() -> int:
    """``agent serve --detach``, as ``agent.cli.main`` runs it."""
    # No cycle collection while the agent loads (~8% of its imports here, which make no
    # garbage worth collecting); the child turns it on again once it serves (``fork``'s ready).
    gc.disable()
    try:
        ready = fork()  # the child's; in the parent, fork raises why the child does not serve
        if ready is None:  # the parent, once the child serves: as a daemon's parent does, it leaves
            os._exit(0)  # without finalizing what the child still uses (and ~4 ms sooner)
        if "--unlock" in sys.argv[1:]:
            from agent import hardening
            from agent.keys import early

            hardening.harden()  # before the fork: the helper is born with it (daemon.serve repeats it)
            if early.hold(paths.lock_path()):  # the agent that will serve, of several started at once
                early.start(paths.vault_path())
        return serve(None, ready)
    except (NotServing, errors.AgentError, paths.InsecurePath) as e:
        message = e.message if isinstance(e, errors.AgentError) else str(e)
        print(f"agent: {message}", file=sys.stderr)
        # agent.cli.exit_code's answers for what starting an agent can raise
        return e.code if isinstance(e, NotServing) else ERROR


def serve(log_level: str | None, ready: Callable[[], None] | None, **options: float | None) -> int:
    """Run the agent in this process until it stops: its log on stderr, its options (the
    flags ``idle_timeout``, ``max_unlocked``; None: the config's) read now."""
    import logging
    import types

    from agent import daemon, logfile
    from agent.config import load_options
    from client import config

    level = getattr(logging, config.setting("log_level", log_level).upper())
    logfile.setup(level, paths.log_path(), config.setting("log_max_bytes"))
    return daemon.serve(load_options(types.SimpleNamespace(**options)), ready)


def answers(path: Path) -> bool:
    """Whether an agent answers at ``path``; a socket the client refuses is an error
    that says why (``UntrustedSocket``), never "no agent"."""
    from client import Client

    try:
        with Client(path, timeout=2.0, autostart=False) as c:
            c.hello()
        return True
    except errors.UntrustedSocket:
        raise
    except (errors.AgentUnavailable, errors.AgentTimeout, errors.ProtocolError):
        return False


def fork() -> Callable[[], None] | None:
    """``serve --detach``: in the child, the call that says it serves; in the parent, None
    once the child serves (``NotServing`` once it exited without)."""
    if sys.platform == "win32":  # no --detach there: a client runs `agent start`
        raise NotServing("`agent serve --detach` needs fork(); on Windows run `agent start`")
    log_file = paths.log_path()
    paths.ensure_private_dir(log_file.parent)
    fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    offset = os.fstat(fd).st_size  # what this start adds to the log is read back on failure
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        os.setsid()  # no terminal's Ctrl+C or hangup reaches it
        null = os.open(os.devnull, os.O_RDONLY)  # nor does it hold the caller's terminal or pipe open
        os.dup2(null, 0)
        os.close(null)
        os.dup2(fd, 1)  # the caller's pipes are let go at once: whoever reads them sees their end
        os.dup2(fd, 2)
        os.close(fd)

        def ready() -> None:
            try:
                os.write(write_end, b"1")
            except OSError:
                pass  # the parent is gone (killed): nobody waits
            os.close(write_end)
            gc.enable()  # off while the agent loaded (``main``)

        return ready
    os.close(write_end)
    os.close(fd)
    _until_serving(pid, read_end, log_file, offset)
    return None


def _until_serving(pid: int, pipe: int, log_file: Path, offset: int) -> None:
    import select

    deadline = time.monotonic() + START_TIMEOUT
    try:
        if not select.select([pipe], [], [], START_TIMEOUT)[0]:
            raise NotServing(f"the agent did not answer within {START_TIMEOUT:g} s; see {log_file}", NO_AGENT)
        if os.read(pipe, 1):
            return
    finally:
        os.close(pipe)
    code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    if code != 0:
        raise NotServing(f"the agent exited with status {code}: {why_not_started(log_file, offset)}")
    # exit 0 without serving: another agent holds the vault (several first uses at once); it answers soon
    path = paths.socket_path()
    while time.monotonic() < deadline:
        if answers(path):
            return
        time.sleep(0.02)
    raise NotServing(f"the agent did not answer within {START_TIMEOUT:g} s; see {log_file}", NO_AGENT)


def why_not_started(log_file: Path, offset: int) -> str:
    """The last line the agent wrote to its log, or, where it could write none, why (a full disk)."""
    import shutil

    try:
        with open(log_file, "rb") as f:
            f.seek(offset)
            lines = [line for line in f.read().decode(errors="replace").splitlines() if line.strip()]
    except OSError:
        lines = []
    if lines:
        return f"{lines[-1].strip()} (see {log_file})"
    for where in (paths.data_dir(), log_file.parent):
        try:
            free = shutil.disk_usage(where).free
        except OSError:
            continue
        if free < FULL_DISK:
            return f"the disk holding {where} is full ({free} bytes free), so it could not even write its log"
    return f"it wrote nothing to its log ({log_file})"
