"""The ``agent`` command: ``main`` (the console script) and ``build_parser``.

One module per command group registers its subcommands (``register``); what they
share is ``agent.cli._common``, which states the rules every command follows.
This module holds the one table from a failure to its exit code: a command
returns its ``Exit`` code or raises, and ``main`` prints the failure as one line
on stderr. Stdout closed early (``agent ls | head -1``) ends the command quietly
with ``BROKEN_PIPE``, as a command killed by SIGPIPE would.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

import agent
from agent import service_units
from agent.cli import audit, completion, control, credentials, execute, migration, recovery, remote, run, service, vault
from agent.cli._common import CliError, Exit
from client import errors, paths

__all__ = ["main", "build_parser", "Exit", "BROKEN_PIPE"]

BROKEN_PIPE = 128 + 13  # 128 + SIGPIPE: what a shell reports for a C tool cut off by `head`

# what main reports in one line (anything else is a bug and keeps its traceback)
_FAILURES = (CliError, errors.AgentError, paths.InsecurePath, service_units.ServiceError)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="agent", description="credential agent for API keys")
    parser.add_argument("--version", action="version", version=f"credential-agent {agent.__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    control.register(sub)
    vault.register(sub)
    credentials.register(sub)
    migration.register(sub)
    execute.register(sub)
    run.register(sub)
    service.register(sub)
    audit.register(sub)
    remote.register(sub)
    vault.register_rotation(sub)  # after the commands `agent --help` always listed, in their order
    recovery.register(sub)
    completion.register(sub)
    parser.set_defaults(root_parser=parser)  # for `agent man`
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


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    if "_ARGCOMPLETE" in os.environ:  # a shell asking for completions (agent completion)
        completion.complete(parser)
    args = parser.parse_args(argv)
    try:
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
