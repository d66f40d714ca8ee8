"""What the ``agent`` commands share: exit codes, the CLI's error, reading secrets,
printing JSON and times, and the argument types for names and durations.

Rules of this package (every command module follows them):
- secrets never come from argv: values and passphrases are read from a hidden
  prompt, or from stdin when it is not a terminal (``read_secret``);
- a command returns an ``Exit`` code or raises: ``CliError`` for what the CLI
  itself refuses, the client's typed errors for what the agent answered, a
  library's own translated into ``CliError``; ``agent.cli.main`` turns each
  into one line on stderr and its exit code, and no command calls ``sys.exit``;
- commands talk to the agent through ``client.Client`` like any connector;
- a command module imports this module and the client, never another command module;
- a module's top stays cheap (argparse and re are loaded anyway; enum comes with re):
  what one command needs (json, subprocess, pathlib, client.migrate, ...) is
  imported inside it, so ``agent get`` pays for nothing else.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from collections.abc import Callable
from enum import IntEnum

from client import errors
from client.validation import DEFAULT_TYPE, check_name

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any, Final, TypeAlias

__all__ = [
    "Exit",
    "CliError",
    "Parser",
    "Command",
    "Subcommands",
    "add_command",
    "add_group",
    "read_secret",
    "print_json",
    "format_time",
    "parse_duration",
    "expires_at",
    "display_names",
    "name_arg",
    "add_name",
    "check_platform",
    "check_variable",
    "pairs",
]


class Exit(IntEnum):
    OK = 0
    ERROR = 1
    USAGE = 2
    LOCKED = 3
    NO_AGENT = 4


class CliError(Exception):
    """What the CLI itself refuses (bad usage, empty input); ``code`` is the exit code."""

    def __init__(self, message: str, code: Exit = Exit.ERROR) -> None:
        super().__init__(message)
        self.code = code


# --- registering commands ------------------------------------------------------------
_width: int | None = None


def _help_width() -> int:
    """``shutil.get_terminal_size().columns - 2``, once per process, without importing shutil."""
    global _width
    if _width is None:
        try:
            columns = int(os.environ.get("COLUMNS", "0"))
        except ValueError:
            columns = 0
        if columns <= 0:
            try:
                columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
            except (AttributeError, ValueError, OSError):
                columns = 0
        _width = (columns if columns > 0 else 80) - 2
    return _width


class _Formatter(argparse.HelpFormatter):
    # argparse makes a formatter for every add_argument (to check its metavar), and
    # each would import shutil and ask the terminal its size
    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24,
                 width: int | None = None) -> None:
        super().__init__(prog, indent_increment, max_help_position, _help_width() if width is None else width)


class Parser(argparse.ArgumentParser):
    """The ``agent`` parser; its subparsers (``add_parser``) are of this class too."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)


Command = Callable[[argparse.Namespace], int]
# a string: argparse's class cannot be subscripted at run time, only in annotations
Subcommands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def add_command(
    sub: Subcommands, name: str, fn: Command, help: str, description: str | None = None
) -> argparse.ArgumentParser:
    """One subcommand that runs ``fn(args)``; its ``--help`` says ``description`` (default: ``help``)."""
    p = sub.add_parser(name, help=help, description=help if description is None else description)
    p.set_defaults(fn=fn)
    return p


def add_group(sub: Subcommands, name: str, help: str, *, dest: str, metavar: str) -> Subcommands:
    """A subcommand that only holds subcommands of its own (``agent service install``)."""
    p = sub.add_parser(name, help=help, description=help)
    return p.add_subparsers(dest=dest, required=True, metavar=metavar, prog=p.prog)  # see build_parser


# --- input and output ------------------------------------------------------------------
def read_secret(prompt: str, *, confirm: bool = False) -> str:
    """A hidden prompt on a terminal; otherwise the first line of stdin."""
    if sys.stdin.isatty():
        import getpass

        value = getpass.getpass(prompt)
        if confirm and getpass.getpass("Repeat: ") != value:
            raise CliError("the two entries differ")
    else:
        value = sys.stdin.readline().rstrip("\r\n")
    if not value:
        raise CliError("nothing was entered (stdin is empty)")
    return value


def print_json(data: Any) -> None:
    import json

    print(json.dumps(data, indent=2, sort_keys=True, default=str))


def format_time(ts: float | None, fmt: str = "%Y-%m-%d %H:%M") -> str:
    if ts is None:
        return "-"
    try:
        return time.strftime(fmt, time.localtime(ts))
    except (OverflowError, OSError, ValueError):  # a timestamp no calendar holds
        return "?"


def display_names(entry: dict[str, Any]) -> tuple[str, str]:
    """Keyring entries as ``keyring:<service>`` / ``user:<name>``; others as they are."""
    from client import keyring_names

    platform, ctype = entry["platform"], entry["credential_type"]
    if not platform.startswith(keyring_names.PLATFORM_PREFIX):
        return platform, ctype
    meta = entry.get("metadata") or {}
    service = meta.get("keyring_service", keyring_names.decode_platform(platform))
    user = meta.get("keyring_username", keyring_names.decode_type(ctype))
    return (platform if service is None else f"keyring:{service}", ctype if user is None else f"user:{user}")


# --- durations and dates ------------------------------------------------------------------
_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "y": 365 * 86400}
_DURATION_RE: Final = re.compile(r"(\d+(?:\.\d+)?)([smhdwy])")
_DATE_RE: Final = re.compile(r"\d{4}-\d{2}-\d{2}")


def parse_duration(text: str) -> float:
    """``90d``, ``12h``, ``1h30m`` -> seconds."""
    parts = _DURATION_RE.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise CliError(f"not a duration: {text!r} (use e.g. 30m, 12h, 90d, 1y)", Exit.USAGE)
    return sum(float(n) * _UNITS[u] for n, u in parts)


def expires_at(text: str | None, now: float | None = None) -> float | None:
    """``--expires``: a duration from now (``90d``) or a local date (``2026-03-31``)."""
    if text is None:
        return None
    if _DATE_RE.fullmatch(text):
        return time.mktime(time.strptime(text, "%Y-%m-%d"))
    return (time.time() if now is None else now) + parse_duration(text)


# --- names --------------------------------------------------------------------------------
def name_arg(name: str) -> str:
    """argparse type: a legal name, else a usage error that does not echo the argument."""
    try:
        return check_name(name)
    except errors.BadRequest as e:
        raise argparse.ArgumentTypeError(e.message) from None


def add_name(p: argparse.ArgumentParser) -> None:
    """The ``PLATFORM`` and ``--type`` arguments that name one credential."""
    p.add_argument("platform", type=name_arg, help="platform name, e.g. huggingface, wandb, runpod")
    p.add_argument("--type", type=name_arg, default=DEFAULT_TYPE, help=f"credential type (default {DEFAULT_TYPE})")


def check_platform(name: str) -> str:
    """A name taken out of a ``LEFT=RIGHT`` argument: legal, else a usage error."""
    try:
        return check_name(name)
    except errors.BadRequest as e:
        raise CliError(e.message, Exit.USAGE) from None


def check_variable(name: str) -> str:
    """An environment variable's name: legal, else a usage error."""
    from client import migrate

    if not migrate.valid_variable(name):
        raise CliError("invalid variable name: use letters, digits and '_', not starting with a digit", Exit.USAGE)
    return name


def pairs(specs: Sequence[str], what: str) -> list[tuple[str, str]]:
    """``LEFT=RIGHT`` arguments, both sides non-empty; ``what`` names the form in the error."""
    out = []
    for spec in specs:
        left, sep, right = spec.partition("=")
        if not sep or not left or not right:
            raise CliError(f"expected {what}, got an argument without '=' or with an empty side", Exit.USAGE)
        out.append((left, right))
    return out
