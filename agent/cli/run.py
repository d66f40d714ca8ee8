"""``agent run``: run a command with the credentials an env file refers to (as ``op run``).

- Values of the form ``agent://PLATFORM[/TYPE]`` are references; every other value
  is passed through. References come from ``--env-file`` files (``.env`` syntax, read
  by ``client.dotenv.parse_dotenv``; a later file wins) and from this process's own
  environment, which the files override.
- Every reference is fetched in one round trip before the command starts
  (``agent.cli._env``); a missing one names its variable and reference.
- Without masking this process becomes the command, as ``agent exec`` does. With
  ``--mask`` (the default when stdout is a terminal) it stays as the command's parent:
  the command's stdout and stderr pass through ``agent.cli.masking``, and SIGINT,
  SIGTERM and SIGHUP sent to this process go to the command; the exit status is the
  command's, or 128 + the signal that killed it, as a shell reports it.
"""

from __future__ import annotations

import argparse
import os
import sys

from agent.cli import _env
from agent.cli._common import CliError, Exit, Subcommands, add_command
from client import errors, validation

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Final

__all__ = ["register", "REFERENCE"]

REFERENCE: Final = "agent://"
MAX_ENV_FILE: Final = 1024 * 1024  # an env file of references is a few hundred bytes


def _reference(var: str, ref: str) -> tuple[str, str]:
    platform, _, ctype = ref.removeprefix(REFERENCE).partition("/")
    try:
        return validation.check_name(platform), validation.check_name(ctype or validation.DEFAULT_TYPE, "type")
    except errors.BadRequest as e:
        raise CliError(f"{var}={ref} is not a reference of the form {REFERENCE}PLATFORM[/TYPE]: {e.message}") from None


def _read_env_file(path: str) -> list[tuple[str, str]]:
    from client import dotenv  # only here, and light: the syntax alone, not the importers

    try:
        with open(path, "rb") as f:
            data = f.read(MAX_ENV_FILE + 1)
    except OSError as e:
        raise CliError(f"cannot read {path}: {e.strerror or type(e).__name__}") from None
    if len(data) > MAX_ENV_FILE:
        raise CliError(f"{path} is larger than {MAX_ENV_FILE // 1024} KiB; not an env file")
    try:
        text = data.decode("utf-8-sig")
        return [(name, value) for name, value, _ in dotenv.parse_dotenv(text, path)]
    except UnicodeDecodeError as e:
        raise CliError(f"{path} is not UTF-8 text (bad byte at offset {e.start})") from None
    except dotenv.SourceError as e:
        raise CliError(e.message.replace("; nothing was imported", "")) from None


def environment(files: Sequence[str], base: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """The command's environment before resolving, and ``{VAR: reference}`` in it."""
    env = dict(base)
    for path in files:
        env.update(_read_env_file(path))
    refs = {var: value for var, value in env.items() if value.startswith(REFERENCE)}
    return env, refs


def cmd_run(args: argparse.Namespace) -> int:
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        raise CliError("name the command to run: agent run --env-file FILE -- CMD [ARGS...]", Exit.USAGE)
    env, refs = environment(args.env_file, os.environ)
    wanted = {var: _reference(var, ref) for var, ref in refs.items()}
    if args.grant:  # the references are granted, not resolved: their variables stay unset
        _env.grant(wanted, command[0])
        return _env.exec_command(command, {k: v for k, v in env.items() if k not in refs})
    values = _env.fetch(wanted, command[0], refs, refuse_expired=args.refuse_expired)
    child = _env.child_env(env, values)
    mask = sys.stdout.isatty() if args.mask is None else args.mask
    if not mask:
        return _env.exec_command(command, child)
    if sys.platform == "win32":  # masking takes its signals with sigwaitinfo, which Windows has not
        raise CliError("--mask is not available on Windows: run with --no-mask", Exit.USAGE)
    from agent.cli import supervise  # only here: pipes, threads and signals are for masking

    return supervise.run_masked(command, child, values.values())


def register(sub: Subcommands) -> None:
    p = add_command(
        sub,
        "run",
        cmd_run,
        "run a command with the credentials an env file refers to",
        description="Run a command with environment variables whose values are references "
        f"({REFERENCE}PLATFORM[/TYPE]) resolved from the agent.",
    )
    p.add_argument(
        "--env-file",
        action="append",
        default=[],
        metavar="FILE",
        help=f"a file in .env syntax whose values may be {REFERENCE}PLATFORM[/TYPE] references (repeatable)",
    )
    p.add_argument(
        "--grant",
        action="store_true",
        help="grant the referenced credentials to the command and its children instead of setting them "
        "(they read them through the client library; any other credential needs your approval)",
    )
    p.add_argument(
        "--mask",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="replace credential values in the command's output with <concealed by agent> "
        "(default: on when stdout is a terminal)",
    )
    p.add_argument(
        "--refuse-expired",
        action="store_true",
        help="refuse to run the command if a credential has expired (exit 1); default: warn",
    )
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="-- CMD [ARGS...]")
