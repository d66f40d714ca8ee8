"""``agent exec``: run a command with credentials in its environment.

Every credential is fetched before the command starts, so a missing credential or
a locked agent fails with the command never run; then this process becomes the
command (``execvpe``): its signals and exit status are the caller's to see.
"""

from __future__ import annotations

import argparse
import os
import sys

from agent.cli._common import CliError, Exit, Subcommands, add_command, check_platform, check_variable, pairs
from client import Client, errors, validation

__all__ = ["register"]


def _wanted(args: argparse.Namespace) -> dict[str, tuple[str, str]]:
    """``{VAR: (platform, type)}`` from ``--env`` and ``--platform``, conflicts refused."""
    from client import migrate

    wanted: dict[str, tuple[str, str]] = {}
    specs = [(check_variable(var), target) for var, target in pairs(args.env, "VAR=PLATFORM[:TYPE]")]
    specs += [(migrate.variable_for(check_platform(p.partition(":")[0])), p) for p in args.platform]
    for var, target in specs:
        platform, _, ctype = target.partition(":")
        name = (check_platform(platform), ctype or validation.DEFAULT_TYPE)
        if ctype:
            check_platform(ctype)
        if wanted.setdefault(var, name) != name:
            raise CliError(f"{var} is asked for twice, from different credentials", Exit.USAGE)
    return wanted


def cmd_exec(args: argparse.Namespace) -> int:
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        raise CliError("name the command to run: agent exec [--env VAR=PLATFORM]... -- CMD [ARGS...]", Exit.USAGE)
    from client import migrate

    wanted = _wanted(args)
    if not wanted:
        raise CliError("name at least one credential with --env VAR=PLATFORM or --platform NAME", Exit.USAGE)
    if os.environ.get(migrate.EXEC_GUARD):
        raise CliError(f"already inside `agent exec` ({migrate.EXEC_GUARD} is set); "
                       f"unset {migrate.EXEC_GUARD} to nest one on purpose")
    with Client() as c:
        replies = c.call_many([("get", {"platform": p, "credential_type": t}) for p, t in wanted.values()])
    for (platform, _), reply in zip(wanted.values(), replies, strict=True):
        if isinstance(reply, errors.AgentError):
            hint = f"store it with `agent set {platform}`; " if isinstance(reply, errors.NotFound) else ""
            # the agent's own error class, so that main gives it its exit code (locked: 3)
            raise type(reply)(f"{reply.message}; {hint}{command[0]} was not started") from None
    env = {**os.environ, **dict(zip(wanted, replies, strict=True)), migrate.EXEC_GUARD: "1"}
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execvpe(command[0], command, env)  # noqa: S606 - replacing ourselves with the user's command is the point
    except FileNotFoundError:
        print(f"agent: command not found: {command[0]}", file=sys.stderr)
        return 127  # as shells say it
    except ValueError:
        # os.execvpe refuses NUL bytes; never say which value
        raise CliError("a credential contains a NUL byte and cannot go into an environment variable") from None
    except OSError as e:
        print(f"agent: cannot run {command[0]}: {e.strerror or type(e).__name__}", file=sys.stderr)
        return 126


def register(sub: Subcommands) -> None:
    p = add_command(sub, "exec", cmd_exec, "run a command with credentials in its environment")
    p.add_argument("--env", action="append", default=[], metavar="VAR=PLATFORM[:TYPE]",
                   help="set VAR to this credential (repeatable)")
    p.add_argument("--platform", action="append", default=[], metavar="NAME[:TYPE]",
                   help="set the platform's usual variable, e.g. huggingface -> HF_TOKEN (repeatable)")
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="-- CMD [ARGS...]")
