"""``agent set | get | ls | show | rm | validate``: one credential at a time, and the list.

Values come from ``read_secret`` (never argv); only ``get`` prints one. ``ls`` and
``show`` print names, times and metadata, and flag credentials that expire soon.
"""

from __future__ import annotations

import argparse
import sys
import time

from agent.cli._common import (
    CliError,
    Exit,
    Subcommands,
    add_command,
    add_name,
    display_names,
    expires_at,
    format_time,
    name_arg,
    print_json,
    read_secret,
)
from client import Client

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any, Final

__all__ = ["register"]

# `agent ls` flags credentials that expire within this long
SOON: Final = 14 * 86400


def _meta_pairs(pairs: Sequence[str]) -> dict[str, str] | None:
    if not pairs:
        return None
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CliError(f"--meta takes KEY=VALUE, got {pair!r}", Exit.USAGE)
        out[key] = value
    return out


def _left(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size:.0f}{unit}"
    return f"{seconds:.0f}s"


def _expiry_mark(ts: float | None, now: float) -> str:
    if ts is None:
        return "-"
    when = format_time(ts)
    if ts <= now:
        return f"{when} EXPIRED"
    if ts - now <= SOON:
        return f"{when} (in {_left(ts - now)})"
    return when


def _print_ls(entries: list[dict[str, Any]]) -> None:
    now = time.time()
    rows = [(*display_names(e), e["updated"], _expiry_mark(e["expires_at"], now)) for e in entries]
    width = max([24, *(len(r[0]) for r in rows)])
    print(f"{'PLATFORM':<{width}} {'TYPE':<16} {'UPDATED':<17} EXPIRES")
    for platform, ctype, updated, mark in rows:
        when = format_time(updated)
        print(f"{platform:<{width}} {ctype:<16} {when:<17} {mark}")


def cmd_set(args: argparse.Namespace) -> int:
    value = read_secret(f"Value for {args.platform}/{args.type}: ")
    with Client() as c:
        c.store(args.platform, value, args.type, _meta_pairs(args.meta), validate=not args.no_validate,
                expires_at=expires_at(args.expires))
    print(f"stored {args.platform}/{args.type}")
    return Exit.OK


def cmd_get(args: argparse.Namespace) -> int:
    with Client() as c:
        value = c.get(args.platform, args.type)
    sys.stdout.write(value + "\n")
    return Exit.OK


def cmd_ls(args: argparse.Namespace) -> int:
    with Client() as c:
        entries = c.list()
    if args.json:
        print_json(entries)
        return Exit.OK
    if not entries:
        print("no credentials stored")
        return Exit.OK
    _print_ls(entries)
    return Exit.OK


def cmd_show(args: argparse.Namespace) -> int:
    with Client() as c:
        entry = c.metadata(args.platform, args.type)
    if args.json:
        print_json(entry)
        return Exit.OK
    print(f"platform:  {entry['platform']}")
    print(f"type:      {entry['credential_type']}")
    print(f"created:   {format_time(entry['created'])}")
    print(f"updated:   {format_time(entry['updated'])}")
    print(f"expires:   {format_time(entry['expires_at'])}")
    for key, value in sorted((entry.get("metadata") or {}).items()):
        print(f"meta.{key}: {value}")
    return Exit.OK


def cmd_rm(args: argparse.Namespace) -> int:
    with Client() as c:
        c.delete(args.platform, args.type)
    print(f"deleted {args.platform}/{args.type}")
    return Exit.OK


def cmd_validate(args: argparse.Namespace) -> int:
    value = read_secret(f"Value for {args.platform}: ")
    with Client() as c:
        result = c.call("validate", {"platform": args.platform, "value": value})
    if result["valid"]:
        print(f"valid for {args.platform}")
        return Exit.OK
    print(f"invalid for {args.platform}: {result['reason']}", file=sys.stderr)
    return Exit.ERROR


def register(sub: Subcommands) -> None:
    p = add_command(sub, "set", cmd_set, "store a credential (value from a hidden prompt or stdin)")
    add_name(p)
    p.add_argument("--meta", action="append", default=[], metavar="KEY=VALUE", help="metadata (repeatable)")
    p.add_argument("--no-validate", action="store_true", help="store even if the platform's rule rejects it")
    p.add_argument("--expires", metavar="WHEN", help="expiry: a duration (90d, 12h) or a date (2026-03-31)")
    p = add_command(sub, "get", cmd_get, "print a credential's value")
    add_name(p)
    p = add_command(sub, "ls", cmd_ls, "list stored credentials (never values)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p = add_command(sub, "show", cmd_show, "show a credential's metadata (never its value)")
    add_name(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p = add_command(sub, "rm", cmd_rm, "delete a credential")
    add_name(p)
    p = add_command(sub, "validate", cmd_validate, "check a value (from stdin) against the platform's rule")
    p.add_argument("platform", type=name_arg)
