"""``agent import``, ``agent export`` and ``agent exec``: keys in from files and
variables, out to a file, and into a command's environment.

Rules of this module (on top of ``agent.cli``'s):
- a summary line per item (imported, replaced, skipped, failed, and why), never a value;
- a source that cannot be read or parsed is refused whole: nothing from it is stored;
- ``exec`` fetches every credential before it starts the command, so a missing
  credential or a locked agent fails with the command never run.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from agent.cli import CliError, Exit, _print_json
from client import Client, errors, migrate, validation
from client.service import write_private_json

__all__ = ["register"]

Add = Callable[[str, Callable[[argparse.Namespace], int], str], argparse.ArgumentParser]


# --- import -------------------------------------------------------------------------
def _read(path: str) -> tuple[str, str]:
    """(text, label) of a file, or of stdin for ``-``."""
    if path != "-":
        return migrate.read_source(path), path
    if sys.stdin.isatty():
        raise CliError("reading a credentials file from a terminal; pipe it in or name the file", Exit.USAGE)
    data = sys.stdin.buffer.read(migrate.MAX_SOURCE + 1)
    if not data.strip():
        raise CliError("nothing to import: stdin is empty")
    if len(data) > migrate.MAX_SOURCE:
        raise CliError("stdin is larger than a credentials file can be; nothing was imported")
    return migrate.decode_source(data, "stdin"), "stdin"


def _pairs(specs: Sequence[str], what: str) -> list[tuple[str, str]]:
    out = []
    for spec in specs:
        left, sep, right = spec.partition("=")
        if not sep or not left or not right:
            raise CliError(f"expected {what}, got an argument without '=' or with an empty side", Exit.USAGE)
        out.append((left, right))
    return out


def _check_platform(name: str) -> str:
    try:
        return validation.check_name(name)
    except errors.BadRequest as e:
        raise CliError(e.message, Exit.USAGE) from None


def _check_variable(name: str) -> str:
    if not migrate.valid_variable(name):
        raise CliError("invalid variable name: use letters, digits and '_', not starting with a digit", Exit.USAGE)
    return name


def _report(args: argparse.Namespace, source: str, items: list[migrate.Item]) -> int:
    failed = any(i.status == "failed" for i in items)
    tally = migrate.counts(items)
    if args.json:
        _print_json({"source": source, "dry_run": getattr(args, "dry_run", False),
                     "items": [i.to_json() for i in items], "counts": tally})
    else:
        if getattr(args, "dry_run", False):
            print("dry run: nothing was stored")
        for item in items:
            print(item.describe())
        if not items:
            print(f"nothing to import from {source}")
        else:
            shown = ", ".join(f"{n} {k}" for k, n in tally.items() if n)
            print(f"{len(items)} item{'s' if len(items) != 1 else ''}: {shown}")
    return int(Exit.ERROR if failed else Exit.OK)


def _import(args: argparse.Namespace, source: str, records: list[migrate.Record]) -> int:
    with Client() as c:
        items = migrate.import_records(c, records, replace=not args.no_replace, validate=not args.no_validate,
                                       dry_run=args.dry_run)
    return _report(args, source, items)


def cmd_import_json(args: argparse.Namespace) -> int:
    text, label = _read(args.file)
    records = migrate.records_from_json(migrate.parse_json(text, label), label)
    return _import(args, f"json:{label}", records)


def cmd_import_dotenv(args: argparse.Namespace) -> int:
    extra = {_check_variable(var): _check_platform(platform) for var, platform in _pairs(args.map, "VAR=PLATFORM")}
    text, label = _read(args.file)
    path = label if label == "stdin" else str(Path(label).resolve())
    records = migrate.records_from_dotenv(migrate.parse_dotenv(text, label), extra, path)
    return _import(args, f"dotenv:{label}", records)


def cmd_import_env(args: argparse.Namespace) -> int:
    pairs = [(_check_platform(p), _check_variable(v)) for p, v in _pairs(args.pairs, "PLATFORM=VAR")]
    records = migrate.records_from_env(os.environ, pairs or None)
    if not pairs and not records:
        known = ", ".join(migrate.KNOWN_VARIABLES)
        print(f"no known key variable is set ({known}); name others as PLATFORM=VAR", file=sys.stderr)
    return _import(args, "env", records)


# --- export -------------------------------------------------------------------------
def cmd_export(args: argparse.Namespace) -> int:
    if args.file == "-" and args.json:
        raise CliError("--json and FILE '-' both write to stdout; name a file", Exit.USAGE)
    with Client() as c:
        data, items = migrate.export_records(c, args.include_values)
    if args.file == "-":
        _print_json(data)
    else:
        try:
            write_private_json(Path(args.file), data)
        except OSError as e:
            raise CliError(f"cannot write {args.file}: {e.strerror or type(e).__name__}") from None
    if args.include_values:
        where = "stdout" if args.file == "-" else f"{args.file} (mode 0600)"
        print(f"warning: {where} holds {sum(i.status == 'exported' for i in items)} credentials in plain text; "
              "keep it private and delete it when done (shred -u)", file=sys.stderr)
    failed = any(i.status == "failed" for i in items)
    if args.json:
        _print_json({"path": str(Path(args.file).resolve()), "include_values": args.include_values,
                     "items": [i.to_json() for i in items], "counts": migrate.counts(items)})
    elif args.file != "-":
        for item in items:
            print(item.describe())
        print(f"wrote {sum(i.status == 'exported' for i in items)} credentials to {args.file}"
              + ("" if args.include_values else " (names and metadata, no values)"))
    return int(Exit.ERROR if failed else Exit.OK)


# --- exec ---------------------------------------------------------------------------
def _wanted(args: argparse.Namespace) -> dict[str, tuple[str, str]]:
    """``{VAR: (platform, type)}`` from ``--env`` and ``--platform``, conflicts refused."""
    wanted: dict[str, tuple[str, str]] = {}
    specs = [(_check_variable(var), target) for var, target in _pairs(args.env, "VAR=PLATFORM[:TYPE]")]
    specs += [(migrate.variable_for(_check_platform(p.partition(":")[0])), p) for p in args.platform]
    for var, target in specs:
        platform, _, ctype = target.partition(":")
        name = (_check_platform(platform), ctype or validation.DEFAULT_TYPE)
        if ctype:
            _check_platform(ctype)
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
    if os.environ.get(migrate.EXEC_GUARD):
        raise CliError(f"already inside `agent exec` ({migrate.EXEC_GUARD} is set); "
                       f"unset {migrate.EXEC_GUARD} to nest one on purpose")
    with Client() as c:
        replies = c.call_many([("get", {"platform": p, "credential_type": t}) for p, t in wanted.values()])
    for (platform, _), reply in zip(wanted.values(), replies, strict=True):
        if isinstance(reply, errors.NotFound):
            raise CliError(f"{reply.message}; store it with `agent set {platform}`; {command[0]} was not started")
        if isinstance(reply, errors.AgentError):
            code = Exit.LOCKED if isinstance(reply, errors.Locked) else Exit.ERROR
            raise CliError(f"{reply.message}; {command[0]} was not started", code)
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


# --- parser -------------------------------------------------------------------------
def _import_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-replace", action="store_true", help="keep credentials already stored (skip them)")
    p.add_argument("--no-validate", action="store_true", help="store values even if the platform's rule rejects them")
    p.add_argument("--dry-run", action="store_true", help="say what would happen; store nothing")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def register(add: Add) -> None:
    """Add ``import``, ``export`` and ``exec`` to the ``agent`` parser (``build_parser``'s ``add``)."""
    p = add("import", cmd_import_json, "import credentials from a JSON file, a .env file or variables")
    kinds = p.add_subparsers(dest="source", required=True, metavar="SOURCE")
    q = kinds.add_parser("json", help="a JSON file ('-' for stdin)",
                         description='{"platform": "value"}, {"platform": {"api_key": ..., "metadata": {...}, '
                                     '"credential_type": ...}} or a list of records with a "platform" field')
    q.add_argument("file", metavar="FILE")
    q.set_defaults(fn=cmd_import_json)
    _import_options(q)
    q = kinds.add_parser("env", help="environment variables",
                         description="PLATFORM=VAR pairs; with none, every known variable that is set "
                                     f"({', '.join(migrate.KNOWN_VARIABLES)})")
    q.add_argument("pairs", nargs="*", metavar="PLATFORM=VAR")
    q.set_defaults(fn=cmd_import_env)
    _import_options(q)
    q = kinds.add_parser("dotenv", help="a .env file ('-' for stdin)",
                         description="known variables map by default: "
                                     + ", ".join(f"{k}->{v}" for k, v in migrate.KNOWN_VARIABLES.items()))
    q.add_argument("file", metavar="FILE")
    q.add_argument("--map", action="append", default=[], metavar="VAR=PLATFORM", help="map a variable (repeatable)")
    q.set_defaults(fn=cmd_import_dotenv)
    _import_options(q)

    p = add("export", cmd_export, "write every credential's name and metadata to a new 0600 JSON file")
    p.add_argument("file", metavar="FILE", help="the file to write ('-' for stdout)")
    p.add_argument("--include-values", action="store_true", help="include the values (plain text!)")
    p.add_argument("--json", action="store_true", help="machine-readable summary")

    p = add("exec", cmd_exec, "run a command with credentials in its environment")
    p.add_argument("--env", action="append", default=[], metavar="VAR=PLATFORM[:TYPE]",
                   help="set VAR to this credential (repeatable)")
    p.add_argument("--platform", action="append", default=[], metavar="NAME[:TYPE]",
                   help="set the platform's usual variable, e.g. huggingface -> HF_TOKEN (repeatable)")
    p.add_argument("command", nargs=argparse.REMAINDER, metavar="-- CMD [ARGS...]")
