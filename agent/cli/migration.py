"""``agent import`` and ``agent export``: keys in from files and variables, out to a file.

Rules of this module:
- a summary line per item (imported, replaced, skipped, failed, and why), never a value;
- a source that cannot be read or parsed is refused whole: nothing from it is stored;
- a replaced credential keeps its metadata (a record's is merged into it) and expiry;
- ``export`` never writes over a file unless ``--force``, and never through a symlink.
"""

from __future__ import annotations

import argparse
import os
import sys

from agent.cli._common import (
    CliError,
    Exit,
    Subcommands,
    add_command,
    add_group,
    check_platform,
    check_variable,
    pairs,
    print_json,
)
from client import Client, errors, variables

# client.migrate (its parsers, json, dataclasses, datetime) and pathlib are imported
# by the commands that use them: `agent get` must not pay for them
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any

    from client import migrate

__all__ = ["register"]


# --- import -------------------------------------------------------------------------
def _read(path: str) -> tuple[str, str]:
    """(text, label) of a file, or of stdin for ``-``."""
    from client import migrate

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


def _report(args: argparse.Namespace, source: str, items: list[migrate.Item]) -> int:
    from client import migrate

    failed = any(i.status == "failed" for i in items)
    tally = migrate.counts(items)
    if args.json:
        print_json(
            {
                "source": source,
                "dry_run": getattr(args, "dry_run", False),
                "items": [i.to_json() for i in items],
                "counts": tally,
            }
        )
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
    from client import migrate

    with Client() as c:
        items = migrate.import_records(
            c,
            records,
            replace=not args.no_replace,
            validate=not args.no_validate,
            dry_run=args.dry_run,
            as_local=getattr(args, "as_local", False),
        )
    return _report(args, source, items)


def cmd_import_json(args: argparse.Namespace) -> int:
    from client import migrate

    text, label = _read(args.file)
    records = migrate.records_from_json(migrate.parse_json(text, label), label)
    return _import(args, f"json:{label}", records)


def cmd_import_dotenv(args: argparse.Namespace) -> int:
    from pathlib import Path

    from client import migrate

    extra = {check_variable(var): check_platform(platform) for var, platform in pairs(args.map, "VAR=PLATFORM")}
    text, label = _read(args.file)
    path = label if label == "stdin" else str(Path(label).resolve())
    records = migrate.records_from_dotenv(migrate.parse_dotenv(text, label), extra, path)
    return _import(args, f"dotenv:{label}", records)


def cmd_import_env(args: argparse.Namespace) -> int:
    from agent.cli import _env
    from client import migrate

    _env.refuse_inside("import env")

    wanted = [(check_platform(p), check_variable(v)) for p, v in pairs(args.pairs, "PLATFORM=VAR")]
    records = migrate.records_from_env(os.environ, wanted or None)
    if not wanted and not records:
        known = ", ".join(migrate.KNOWN_VARIABLES)
        print(f"no known key variable is set ({known}); name others as PLATFORM=VAR", file=sys.stderr)
    return _import(args, "env", records)


# --- export -------------------------------------------------------------------------
def cmd_export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from client import migrate
    from client.service import json_object_chunks, write_private_text

    if args.file == "-" and args.json:
        raise CliError("--json and FILE '-' both write to stdout; name a file", Exit.USAGE)
    if args.file != "-" and not args.force and os.path.lexists(args.file):  # before any value is read
        raise CliError(f"{args.file} already exists; nothing was written (--force replaces it)")
    items: list[migrate.Item] = []

    def records(c: Client) -> Iterator[tuple[str, dict[str, Any]]]:
        for record, item in migrate.export_stream(c, args.include_values, args.include_team, args.include_history):
            items.append(item)
            if record is not None:
                yield item.name, record

    with Client() as c:
        if args.file == "-":  # whole or not at all: a failure halfway prints nothing
            sys.stdout.write("".join(json_object_chunks(records(c), default=str)))
        else:  # written as it is fetched, a batch at a time (a failure leaves no file)
            try:
                write_private_text(Path(args.file), json_object_chunks(records(c)), replace=args.force)
            except FileExistsError:  # made meanwhile
                raise CliError(f"{args.file} already exists; nothing was written (--force replaces it)") from None
            except errors.AgentError:  # AgentUnavailable is an OSError too: not the file's fault
                raise
            except OSError as e:
                raise CliError(f"cannot write {args.file}: {e.strerror or type(e).__name__}") from None
    if args.include_values:
        where = "stdout" if args.file == "-" else f"{args.file} (mode 0600)"
        print(
            f"warning: {where} holds {sum(i.status == 'exported' for i in items)} credentials in plain text; "
            "keep it private and delete it when done (shred -u)",
            file=sys.stderr,
        )
    failed = any(i.status == "failed" for i in items)
    if args.json:
        print_json(
            {
                "path": str(Path(args.file).resolve()),
                "include_values": args.include_values,
                "items": [i.to_json() for i in items],
                "counts": migrate.counts(items),
            }
        )
    elif args.file != "-":
        for item in items:
            print(item.describe())
        print(
            f"wrote {sum(i.status == 'exported' for i in items)} credentials to {args.file}"
            + ("" if args.include_values else " (names and metadata, no values)")
        )
    return int(Exit.ERROR if failed else Exit.OK)


# --- parser -------------------------------------------------------------------------
def _import_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-replace", action="store_true", help="keep credentials already stored (skip them)")
    p.add_argument("--no-validate", action="store_true", help="store values even if the platform's rule rejects them")
    p.add_argument("--dry-run", action="store_true", help="say what would happen; store nothing")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def register(sub: Subcommands) -> None:
    kinds = add_group(
        sub, "import", "import credentials from a JSON file, a .env file or variables", dest="source", metavar="SOURCE"
    )
    q = add_command(
        kinds,
        "json",
        cmd_import_json,
        "a JSON file ('-' for stdin)",
        '{"platform": "value"}, {"platform": {"api_key": ..., "metadata": {...}, '
        '"credential_type": ...}} or a list of records with a "platform" field',
    )
    q.add_argument("file", metavar="FILE")
    q.add_argument(
        "--as-local",
        action="store_true",
        help="store keys exported from a team vault as local ones (they then shadow the team's)",
    )
    _import_options(q)
    q = add_command(
        kinds,
        "env",
        cmd_import_env,
        "environment variables",
        f"PLATFORM=VAR pairs; with none, every known variable that is set ({', '.join(variables.KNOWN_VARIABLES)})",
    )
    q.add_argument("pairs", nargs="*", metavar="PLATFORM=VAR")
    _import_options(q)
    q = add_command(
        kinds,
        "dotenv",
        cmd_import_dotenv,
        "a .env file ('-' for stdin)",
        "known variables map by default: " + ", ".join(f"{k}->{v}" for k, v in variables.KNOWN_VARIABLES.items()),
    )
    q.add_argument("file", metavar="FILE")
    q.add_argument("--map", action="append", default=[], metavar="VAR=PLATFORM", help="map a variable (repeatable)")
    _import_options(q)

    p = add_command(sub, "export", cmd_export, "write every credential's name and metadata to a new 0600 JSON file")
    p.add_argument("file", metavar="FILE", help="the file to write ('-' for stdout)")
    p.add_argument("--include-values", action="store_true", help="include the values (plain text!)")
    p.add_argument(
        "--include-history",
        action="store_true",
        help="list each credential's previous values (their values too with --include-values)",
    )
    p.add_argument(
        "--include-team", action="store_true", help="include team vault keys, marked with their source (left out)"
    )
    p.add_argument(
        "--force", action="store_true", help="replace FILE if it exists (a symlink there is replaced, not followed)"
    )
    p.add_argument("--json", action="store_true", help="machine-readable summary")
