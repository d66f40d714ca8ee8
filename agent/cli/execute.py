"""``agent exec``: run a command with credentials in its environment.

Every credential is fetched before the command starts (``agent.cli._env``), so a
missing credential or a locked agent fails with the command never run (an expired
one is warned about, or refused with ``--refuse-expired``); then this process
becomes the command (``execvpe``): its signals and exit status are the caller's to see.
"""

from __future__ import annotations

import argparse
import os

from agent.cli import _env
from agent.cli._common import CliError, Exit, Subcommands, add_command, check_platform, check_variable, pairs
from client import validation

__all__ = ["register"]


def _variable(spec: str) -> str:
    """``--platform NAME[:TYPE]``'s variable: ``runpod`` -> RUNPOD_API_KEY, ``runpod:api-secret``
    -> RUNPOD_API_SECRET."""
    from client import migrate

    platform, _, ctype = spec.partition(":")
    return migrate.variable_for(check_platform(platform), check_platform(ctype) if ctype else validation.DEFAULT_TYPE)


def _wanted(args: argparse.Namespace) -> dict[str, tuple[str, str]]:
    """``{VAR: (platform, type)}`` from ``--env`` and ``--platform``, conflicts refused."""

    wanted: dict[str, tuple[str, str]] = {}
    specs = [(check_variable(var), target) for var, target in pairs(args.env, "VAR=PLATFORM[:TYPE]")]
    specs += [(_variable(p), p) for p in args.platform]
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

    wanted = _wanted(args)
    if not wanted:
        raise CliError("name at least one credential with --env VAR=PLATFORM or --platform NAME", Exit.USAGE)
    if args.grant:
        _env.grant(wanted, command[0])
        return _env.exec_command(command, dict(os.environ))
    values = _env.fetch(wanted, command[0], refuse_expired=args.refuse_expired)
    return _env.exec_command(command, _env.child_env(os.environ, values))


def register(sub: Subcommands) -> None:
    p = add_command(sub, "exec", cmd_exec, "run a command with credentials in its environment")
    p.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="VAR=PLATFORM[:TYPE]",
        help="set VAR to this credential (repeatable)",
    )
    p.add_argument(
        "--platform",
        action="append",
        default=[],
        metavar="NAME[:TYPE]",
        help="set the platform's usual variable, e.g. huggingface -> HF_TOKEN (repeatable)",
    )
    p.add_argument(
        "--refuse-expired",
        action="store_true",
        help="refuse to run the command if a credential has expired (exit 1); default: warn",
    )
    p.add_argument(
        "--grant",
        action="store_true",
        help="grant the credentials to the command and its children instead of setting variables: "
        "they read them through the client library, and any other credential needs your approval",
    )
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="-- CMD [ARGS...]")
