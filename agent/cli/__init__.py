"""The ``agent`` command: ``main`` (the console script) and ``build_parser``.

One module per command group registers its subcommands (``register``); what they
share is ``agent.cli._common``, which states the rules every command follows.
This module holds the one table from a failure to its exit code: a command
returns its ``Exit`` code or raises, and ``main`` prints the failure as one line
on stderr. Stdout closed early (``agent ls | head -1``) ends the command quietly
with ``BROKEN_PIPE``, as a command killed by SIGPIPE would.

Scripts run ``$(agent get NAME)`` and shell prompts ``agent status --short``, so
importing this package and building the parser loads no more than argparse and
the client (and a plain ``agent get NAME`` does not come here at all: ``agent.entry``,
the console script's entry, runs it with the client alone): a command module imports
what only its commands need inside them (tests/system/test_footprint.py lists what
must stay out). The command modules
themselves are imported by ``build_parser``: a command ``plain_args`` parses (``get``,
``status --short``, and ``serve --detach``, a client's autostart) imports its own alone.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

import agent
from agent.cli import versions
from agent.cli._common import CliError, Exit, Parser, Subcommands, platform_arg, type_arg
from client import errors, paths
from client.validation import DEFAULT_TYPE

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Final

__all__ = ["main", "build_parser", "failed", "Exit", "BROKEN_PIPE"]

BROKEN_PIPE = 128 + 13  # 128 + SIGPIPE: what a shell reports for a C tool cut off by `head`

# what main reports in one line (anything else is a bug and keeps its traceback);
# `agent service` reports service_units.ServiceError as a CliError
_FAILURES = (CliError, errors.AgentError, paths.InsecurePath)


# The group (a module of this package) that registers each command: a command named on
# the command line is parsed by a parser of its group alone, which parses it as the whole
# one does at a fraction of the cost (~9 ms: every module imported, every command built).
# tests/system/test_footprint.py holds this table to build_parser's.
GROUPS: Final = {
    **dict.fromkeys(("serve", "start", "stop", "status"), "control"),
    **dict.fromkeys(("init", "unlock", "lock"), "vault"),
    **dict.fromkeys(("set", "get", "ls", "show", "rm", "mv", "validate"), "credentials"),
    **dict.fromkeys(("import", "export"), "migration"),
    **dict.fromkeys(("backup", "restore"), "backup"),
    "exec": "execute",
    "run": "run",
    "inject": "inject",
    "service": "service",
    "audit": "audit",
    "remote": "remote",
    "rotate-key": "rotation",
    **dict.fromkeys(("rekey", "recovery-code", "recover"), "recovery"),
    "history": "history",
    "approve": "approve",
    **dict.fromkeys(("completion", "man"), "completion"),
}


def _registrations(group: str | None) -> list[Callable[[Subcommands], None]]:
    """The ``register`` functions of one group, or (None) of all, in `agent --help`'s order."""
    every = group is None
    found: list[Callable[[Subcommands], None]] = []
    if every or group == "control":
        from agent.cli import control

        found.append(control.register)
    if every or group == "vault":
        from agent.cli import vault

        found.append(vault.register)
    if every or group == "credentials":
        from agent.cli import credentials

        found.append(credentials.register)
    if every or group == "migration":
        from agent.cli import migration

        found.append(migration.register)
    if every or group == "backup":
        from agent.cli import backup

        found.append(backup.register)
    if every or group == "execute":
        from agent.cli import execute

        found.append(execute.register)
    if every or group == "run":
        from agent.cli import run

        found.append(run.register)
    if every or group == "inject":
        from agent.cli import inject

        found.append(inject.register)
    if every or group == "service":
        from agent.cli import service

        found.append(service.register)
    if every or group == "audit":
        from agent.cli import audit

        found.append(audit.register)
    if every or group == "remote":
        from agent.cli import remote

        found.append(remote.register)
    if every or group == "rotation":  # after the commands `agent --help` always listed, in their order
        from agent.cli import vault

        found.append(vault.register_rotation)
    if every or group == "recovery":
        from agent.cli import recovery

        found.append(recovery.register)
    if every or group == "history":
        from agent.cli import history

        found.append(history.register)
    if every or group == "approve":
        from agent.cli import approve

        found.append(approve.register)
    if every or group == "completion":
        from agent.cli import completion

        found.append(completion.register)
    return found


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command; with ``command`` (a name in ``GROUPS``), of its group alone."""
    parser: argparse.ArgumentParser = Parser(prog="agent", description="credential agent for API keys")
    parser.add_argument("--version", action="version", version=f"credential-agent {agent.__version__}")
    # prog given: otherwise argparse formats a usage line to find it, importing shutil
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", prog=parser.prog)
    for register in _registrations(GROUPS.get(command) if command else None):
        register(sub)
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
    """The commands scripts, prompts and autostart run most, in their plain forms, parsed
    without building the parser (~4 ms, an eighth of the whole process) or importing every
    command's module: ``get NAME``, ``get NAME --type TYPE``, ``status --short`` and
    ``serve --detach``. Anything else, a name included that is not legal, goes to argparse
    and its messages. tests/system/test_footprint.py checks that the result is what
    argparse would give."""
    if len(argv) in (2, 4) and argv[0] == "get":
        from agent.cli import credentials
    elif list(argv) in (["status", "--short"], ["serve", "--detach"]):
        from agent.cli import control
    else:
        return None
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
    if list(argv) == ["serve", "--detach"] and sys.platform != "win32":
        return argparse.Namespace(
            command="serve", log_level=None, idle_timeout=None, max_unlocked=None, detach=True, fn=control.cmd_serve
        )
    return None


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = plain_args(argv)
    if args is None:
        completing = "_ARGCOMPLETE" in os.environ  # a shell asking for completions (agent completion)
        parser = build_parser(argv[0] if argv and not completing else None)
        if completing:
            from agent.cli import completion

            completion.complete(parser)
        args = parser.parse_args(argv)
    try:
        # argv[0]: the command (exec and run keep their own `command` in args)
        if argv[0] not in versions.SKIP:
            versions.ensure_current()
        code = int(args.fn(args))
        sys.stdout.flush()  # here, so that a closed pipe is caught below, not at exit
        return code
    except (BrokenPipeError, *_FAILURES, KeyboardInterrupt) as e:
        return failed(e)


def failed(e: BaseException) -> int:
    """What ``main`` says of a command's failure (one line on stderr), and its exit code;
    ``agent.entry``'s ``get`` says its failures here too."""
    if isinstance(e, BrokenPipeError):
        # the reader is gone: nothing to say, and nothing left to flush at exit
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return BROKEN_PIPE
    if isinstance(e, _FAILURES):
        message = e.message if isinstance(e, errors.AgentError) else str(e)
        print(f"agent: {message}", file=sys.stderr)
        return int(exit_code(e))
    if isinstance(e, KeyboardInterrupt):
        print("", file=sys.stderr)
        return 130
    raise e
