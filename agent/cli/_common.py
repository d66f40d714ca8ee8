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
import fnmatch
import os
import re
import sys
import time
from collections.abc import Callable
from enum import IntEnum

from client import config, errors, protocol
from client.names import canonical_platform
from client.validation import DEFAULT_TYPE, check_name

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any, Final, TypeAlias

    from client import Client

__all__ = [
    "shown",
    "older",
    "matches",
    "Exit",
    "CliError",
    "Parser",
    "Command",
    "Subcommands",
    "add_command",
    "add_group",
    "ask_hidden",
    "read_secret",
    "interactive",
    "confirm",
    "unlock_at_terminal",
    "unlock_on_demand",
    "KEYRING",
    "PASSPHRASE",
    "UNLOCK_TRIES",
    "print_json",
    "show_recovery_code",
    "format_time",
    "parse_duration",
    "duration_arg",
    "seconds_arg",
    "expires_at",
    "display_names",
    "name_arg",
    "platform_arg",
    "type_arg",
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
    def __init__(
        self, prog: str, indent_increment: int = 2, max_help_position: int = 24, width: int | None = None
    ) -> None:
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
def ask_hidden(prompt: str) -> str:
    """One hidden answer at the terminal; Ctrl-D there is a ``CliError``, not a traceback."""
    import getpass

    try:
        return getpass.getpass(prompt)
    except EOFError:
        print(file=sys.stderr)  # the prompt's line, ended
        raise CliError("no answer (end of input at the prompt); nothing was changed") from None


def read_secret(prompt: str, *, confirm: bool = False, whole: bool = False) -> str:
    """A hidden prompt on a terminal; otherwise stdin: its first line, or with ``whole``
    all of it less one trailing newline (a PEM key or a service-account JSON is one value)."""
    if sys.stdin.isatty():
        value = ask_hidden(prompt)
        if not value:
            raise CliError("nothing was entered")
        if confirm and ask_hidden("Repeat: ") != value:
            raise CliError("the two entries differ")
        return value
    value = _stdin_value() if whole else sys.stdin.readline().rstrip("\r\n")
    if not value:
        raise CliError("nothing was entered (stdin is empty)")
    return value


def _stdin_value() -> str:
    limit = protocol.MAX_VALUE
    data = sys.stdin.buffer.read(4 * limit + 3)  # UTF-8: at most 4 bytes a character, and a newline
    data = data[:-2] if data.endswith(b"\r\n") else data[:-1] if data.endswith(b"\n") else data
    try:
        value = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise CliError(f"stdin is not UTF-8 text (bad byte at offset {e.start}); nothing was stored") from None
    if len(value) > limit:
        raise CliError(f"the value is longer than {limit} characters, the most the agent takes; nothing was stored")
    return value


def interactive() -> bool:
    """A person at a terminal: stdin and stderr are ttys (stdout may be a pipe)."""
    return sys.stdin.isatty() and sys.stderr.isatty()


def confirm(question: str) -> bool:
    """Ask ``question [y/N]`` at the terminal; only ``y``/``yes`` agrees."""
    print(f"{question} [y/N] ", end="", file=sys.stderr, flush=True)
    return sys.stdin.readline().strip().lower() in ("y", "yes")


# --- unlocking ------------------------------------------------------------------------------
# the CLI knows exactly these two: a third key source fails this line until it is handled
KEYRING, PASSPHRASE = protocol.KEY_SOURCES
# as sudo and ssh-add
UNLOCK_TRIES: Final = 3


def unlock_at_terminal(c: Client, lock_after: float | None = None) -> None:
    """Ask the passphrase up to ``UNLOCK_TRIES`` times; ``BadPassphrase`` after the last.

    Each wrong one costs the agent's growing delay: the agent answers late, the CLI waits."""
    for attempt in range(1, UNLOCK_TRIES + 1):
        try:
            c.unlock(read_secret("Passphrase: "), lock_after)
            return
        except errors.BadPassphrase:
            if attempt < UNLOCK_TRIES:
                print("wrong passphrase, try again", file=sys.stderr)
    raise errors.BadPassphrase(f"{UNLOCK_TRIES} wrong passphrases; the agent stays locked")


def unlock_on_demand(c: Client) -> None:
    """At a terminal, a locked passphrase vault asks its passphrase here (as rbw and
    aws-vault do); elsewhere nothing happens and the command meets ``locked`` (exit 3)."""
    if not interactive():
        return
    st = c.status()
    if not (st["locked"] and st["key_source"] == PASSPHRASE):
        return
    try:
        unlock_at_terminal(c)
    except errors.BadPassphrase as e:
        raise errors.Locked(e.message) from None  # the command did not run: exit 3


def show_recovery_code(code: str) -> None:
    """The one time a recovery code is shown: on stdout, with what it is for."""
    print(f"recovery code: {code}")
    print(
        "It opens this vault if its passphrase or keystore entry is lost (`agent recover`). It is shown "
        "only now: write it down or keep it in a password manager, away from this machine.",
        file=sys.stderr,
    )


def print_json(data: Any) -> None:
    import json

    print(json.dumps(data, indent=2, sort_keys=True, default=str))


def shown(text: object) -> str:
    """``text`` for a terminal: what is not printable (an escape sequence in a team's
    metadata, a caller's path) is written as ``\\x1b``, never sent to the screen as is."""
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in str(text))


def format_time(ts: float | None, fmt: str = "%Y-%m-%d %H:%M") -> str:
    if ts is None:
        return "-"
    try:
        return time.strftime(fmt, time.localtime(ts))
    except (OverflowError, OSError, ValueError):  # a timestamp no calendar holds
        return "?"


# how `agent ls` shows the names of keyring-backend entries; every name argument takes them back
KEYRING_SHOWN: Final = "keyring:"
USER_SHOWN: Final = "user:"


def display_names(entry: dict[str, Any]) -> tuple[str, str]:
    """Keyring entries as ``keyring:<service>`` / ``user:<name>``; others as they are."""
    from client import keyring_names

    platform, ctype = entry["platform"], entry["credential_type"]
    if not platform.startswith(keyring_names.PLATFORM_PREFIX):
        return platform, ctype
    meta = entry.get("metadata") or {}
    service = meta.get("keyring_service", keyring_names.decode_platform(platform))
    user = meta.get("keyring_username", keyring_names.decode_type(ctype))
    return (platform if service is None else KEYRING_SHOWN + service, ctype if user is None else USER_SHOWN + user)


def matches(entry: dict[str, Any], patterns: Sequence[str]) -> bool:
    """``hf*`` globs the platform, ``*/api-secret`` the platform and type, either as
    stored or as shown (``keyring:...``); names compare case-insensitively."""
    names = {(entry["platform"], entry["credential_type"]), display_names(entry)}
    for pattern in patterns:
        pattern = pattern.lower()
        for platform, ctype in names:
            name = f"{platform}/{ctype}" if "/" in pattern else platform
            if fnmatch.fnmatchcase(name.lower(), pattern):
                return True
    return False


# --- durations and dates ------------------------------------------------------------------
_DATE_RE: Final = re.compile(r"\d{4}-\d{2}-\d{2}")


def parse_duration(text: str) -> float:
    """``90d``, ``12h``, ``1h30m``, ``900`` -> seconds (``client.config.parse_duration``),
    or a usage error."""
    try:
        return config.parse_duration(text)
    except ValueError as e:
        raise CliError(str(e), Exit.USAGE) from None


def duration_arg(text: str) -> float:
    """argparse type: a duration (``parse_duration``), else a usage error that says the forms."""
    try:
        return config.parse_duration(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def seconds_arg(text: str) -> float:
    """argparse type: seconds (``900``) or a duration (``15m``, ``2h``), above 0."""
    seconds = duration_arg(text)
    if not seconds > 0:
        raise argparse.ArgumentTypeError("give a time above 0, e.g. 900, 15m, 2h")
    return seconds


def expires_at(text: str | None, now: float | None = None) -> float | None:
    """``--expires``: a duration from now (``90d``) or a local date (``2026-03-31``)."""
    if text is None:
        return None
    if _DATE_RE.fullmatch(text):
        return time.mktime(time.strptime(text, "%Y-%m-%d"))
    if text.strip().replace(".", "", 1).isdigit():  # seconds would be a surprise here
        raise CliError(f"--expires takes a unit or a date: {text}d for days, or e.g. 12h, 2026-03-31", Exit.USAGE)
    return (time.time() if now is None else now) + parse_duration(text)


# --- names --------------------------------------------------------------------------------
def name_arg(name: str) -> str:
    """argparse type: a legal name, else a usage error that does not echo the argument."""
    try:
        return check_name(name)
    except errors.BadRequest as e:
        raise argparse.ArgumentTypeError(e.message) from None


def platform_arg(name: str) -> str:
    """argparse type: a platform as ``agent ls`` prints it (``keyring:<service>`` too), made canonical."""
    if name.startswith(KEYRING_SHOWN):
        from client import keyring_names

        return keyring_names.platform_for(name[len(KEYRING_SHOWN) :])
    return name_arg(canonical_platform(name))


def type_arg(name: str) -> str:
    """argparse type: a credential type as ``agent ls`` prints it (``user:<name>`` too)."""
    if name.startswith(USER_SHOWN):
        from client import keyring_names

        return keyring_names.type_for(name[len(USER_SHOWN) :])
    return name_arg(name)


def add_name(p: argparse.ArgumentParser) -> None:
    """The ``PLATFORM`` and ``--type`` arguments that name one credential."""
    p.add_argument("platform", type=platform_arg, help="platform name, e.g. huggingface, wandb, runpod")
    p.add_argument("--type", type=type_arg, default=DEFAULT_TYPE, help=f"credential type (default {DEFAULT_TYPE})")


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


# --- versions ---------------------------------------------------------------------------
def _parts(version: str) -> tuple[int, ...] | None:
    found = re.fullmatch(r"(\d+(?:\.\d+)*)(.*)", version)
    if found is None:
        return None
    numbers = tuple(int(n) for n in found.group(1).split("."))
    # 1.2.0.dev3 and 1.2.0rc1 come before 1.2.0
    return numbers + ((-1,) if found.group(2) else (0,))


def older(theirs: str, ours: str) -> bool | None:
    """Whether version ``theirs`` comes before ``ours``; None when either cannot be read."""
    a, b = _parts(theirs), _parts(ours)
    return None if a is None or b is None else a < b
