"""``agent completion bash|zsh|fish`` and ``agent man``: both generated from the
command's own parser, so they never fall behind it.

Completion is argcomplete's: the shell script it prints runs ``agent`` again at
each TAB with ``_ARGCOMPLETE`` set, and ``complete`` answers from the parser. Platform
names (and a platform's credential types) come from the agent's ``list``, which
serves names while locked: no value is read, nothing is unlocked, no agent is
started. argcomplete and argparse-manpage are imported only here, only when used.
"""

from __future__ import annotations

import argparse
import sys

import agent
from agent.cli._common import Exit, Subcommands, add_command
from client import Client, errors, paths

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Final

__all__ = ["register", "complete", "SHELLS"]

SHELLS: Final = ("bash", "zsh", "fish")
# a TAB must not hang on a stuck agent
LIST_TIMEOUT: Final = 2.0


def _entries() -> list[dict[str, Any]]:
    try:
        with Client(timeout=LIST_TIMEOUT, autostart=False) as c:
            return c.list()
    except (errors.AgentError, paths.InsecurePath, OSError):
        return []  # no agent, no vault: nothing to offer


def platforms(prefix: str, **_: Any) -> list[str]:
    return sorted({e["platform"] for e in _entries() if e["platform"].startswith(prefix.lower())})


def types(prefix: str, parsed_args: argparse.Namespace, **_: Any) -> list[str]:
    platform = getattr(parsed_args, "platform", None)
    return sorted(
        {
            e["credential_type"]
            for e in _entries()
            if (platform is None or e["platform"] == platform) and e["credential_type"].startswith(prefix)
        }
    )


def _annotate(parser: argparse.ArgumentParser) -> None:
    """Hang the name completers on every ``platform``/``--platform`` (and ``rm``'s and ``mv``'s
    names) and ``--type``."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _annotate(sub)
        elif action.dest in ("platform", "names", "old", "new"):  # a name, or PLATFORM/TYPE names
            action.completer = platforms  # type: ignore[attr-defined]
        elif action.dest == "type":
            action.completer = types  # type: ignore[attr-defined]


def complete(parser: argparse.ArgumentParser) -> None:
    """Answer the shell's completion request and exit (called only with ``_ARGCOMPLETE`` set)."""
    import argcomplete

    _annotate(parser)
    argcomplete.autocomplete(parser)


def cmd_completion(args: argparse.Namespace) -> int:
    from argcomplete.shell_integration import shellcode

    sys.stdout.write(shellcode(["agent"], shell=args.shell))
    return Exit.OK


def cmd_man(args: argparse.Namespace) -> int:
    from argparse_manpage.manpage import Manpage

    from agent.cli import build_parser  # here: agent.cli imports this module

    parser = build_parser()  # the whole parser, as `agent --help` sees it
    page = Manpage(
        parser,
        _data={
            "project_name": "credential-agent",
            "version": agent.__version__,
            "manual_section": 1,
            "manual_title": "credential-agent manual",
            "description": parser.description,
        },
        format="single-commands-section",
    )
    # a help text wrapped so that a line starts with ' (a quoted word) would be a roff request
    sys.stdout.write(
        "".join("\\&" + line if line.startswith("'") else line for line in str(page).splitlines(keepends=True))
    )
    return Exit.OK


def register(sub: Subcommands) -> None:
    p = add_command(
        sub,
        "completion",
        cmd_completion,
        "print a shell completion script (bash, zsh, fish)",
        description='Print a completion script: eval "$(agent completion bash)" in ~/.bashrc, '
        "agent completion fish > ~/.config/fish/completions/agent.fish. Stored platform "
        "names complete too (names only, also while locked).",
    )
    p.add_argument("shell", choices=SHELLS)
    add_command(sub, "man", cmd_man, "print the manual page (roff): agent man | man -l -")
