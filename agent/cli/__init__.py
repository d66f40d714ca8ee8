"""The ``agent`` command: ``main`` (the console script) and ``build_parser``.

One module per command group registers its subcommands (``register``); what they
share is ``agent.cli._common``, which states the rules every command follows.
This module holds the one table from a failure to its exit code: a command
returns its ``Exit`` code or raises, and ``main`` prints the failure as one line
on stderr. Stdout closed early (``agent ls | head -1``) ends the command quietly
with ``BROKEN_PIPE``, as a command killed by SIGPIPE would.

Scripts run ``$(agent get NAME)`` and shell prompts ``agent status --short``, so
importing this package and building the parser loads no more than argparse and
the client: a command module imports what only its commands need inside them
(tests/system/test_footprint.py lists what must stay out).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

import agent
from agent.cli import (
    approve,
    audit,
    backup,
    completion,
    control,
    credentials,
    execute,
    history,
    inject,
    migration,
    recovery,
    remote,
    run,
    service,
    vault,
    versions,
)
from agent.cli._common import CliError, Exit, Parser, platform_arg, type_arg
from client import errors, paths
from client.validation import DEFAULT_TYPE

__all__ = ["main", "build_parser", "Exit", "BROKEN_PIPE"]

BROKEN_PIPE = 128 + 13  # 128 + SIGPIPE: what a shell reports for a C tool cut off by `head`

# what main reports in one line (anything else is a bug and keeps its traceback);
# `agent service` reports service_units.ServiceError as a CliError
_FAILURES = (CliError, errors.AgentError, paths.InsecurePath)


def build_parser() -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = Parser(prog="agent", description="credential agent for API keys")
    parser.add_argument("--version", action="version", version=f"credential-agent {agent.__version__}")
    # prog given: otherwise argparse formats a usage line to find it, importing shutil
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", prog=parser.prog)
    control.register(sub)
    vault.register(sub)
    credentials.register(sub)
    migration.register(sub)
    backup.register(sub)
    execute.register(sub)
    run.register(sub)
    inject.register(sub)
    service.register(sub)
    audit.register(sub)
    remote.register(sub)
    vault.register_rotation(sub)  # after the commands `agent --help` always listed, in their order
    recovery.register(sub)
    history.register(sub)
    approve.register(sub)
    completion.register(sub)
    return parser


def exit_code(e: Exception) -> Exit:
    """The exit code of a failure ``main`` reports."""
    if isinstance(e, CliError):
        return e.code
    if isinstance(e, errors.UntrustedSocket):  # something is there, and it is not to be trusted
        return Exit.ERROR
    if isinstance(e, errors.AgentUnavailable):
        return Exit.NO_AGENT
    if isinstance(e, errors.Locked):
        return Exit.LOCKED
    return Exit.ERROR


def plain_args(argv: Sequence[str]) -> argparse.Namespace | None:
    """The two commands scripts and prompts run most, in their plain forms, parsed
    without building the parser (that is ~4 ms, an eighth of the whole process):
    ``get NAME``, ``get NAME --type TYPE`` and ``status --short``. Anything else, a
    name included that is not legal, goes to argparse and its messages.
    tests/system/test_footprint.py checks that the result is what argparse would give."""
    if len(argv) in (2, 4) and argv[0] == "get" and (len(argv) == 2 or argv[2] == "--type"):
        names = [argv[1], *argv[3:]]
        if any(n.startswith("-") for n in names):
            return None
        try:  # the argument types of `get`: a canonical platform, ls's keyring: names too
            platform = platform_arg(names[0])
            ctype = type_arg(names[1]) if len(names) == 2 else DEFAULT_TYPE
        except argparse.ArgumentTypeError:
            return None
        return argparse.Namespace(
            command="get",
            platform=platform,
            type=ctype,
            clip=False,
            clip_timeout=credentials.CLIP_TIMEOUT,
            fn=credentials.cmd_get,
        )
    if list(argv) == ["status", "--short"]:
        return argparse.Namespace(command="status", json=False, short=True, fn=control.cmd_status)
    return None


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = plain_args(argv)
    if args is None:
        parser = build_parser()
        if "_ARGCOMPLETE" in os.environ:  # a shell asking for completions (agent completion)
            completion.complete(parser)
        args = parser.parse_args(argv)
    try:
        # argv[0]: the command (exec and run keep their own `command` in args)
        if argv[0] not in versions.SKIP:
            versions.ensure_current()
        code = int(args.fn(args))
        sys.stdout.flush()  # here, so that a closed pipe is caught below, not at exit
        return code
    except BrokenPipeError:
        # the reader is gone: nothing to say, and nothing left to flush at exit
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return BROKEN_PIPE
    except _FAILURES as e:
        message = e.message if isinstance(e, errors.AgentError) else str(e)
        print(f"agent: {message}", file=sys.stderr)
        return int(exit_code(e))
    except KeyboardInterrupt:
        print("", file=sys.stderr)
        return 130
