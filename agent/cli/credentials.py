"""``agent set | get | ls | show | rm | validate``: one credential at a time, and the list.

Values come from ``read_secret`` (never argv; all of stdin when piped); only ``get``
prints one. ``set`` over a stored credential keeps its metadata and expiry unless
told. ``ls`` and ``show`` print names, times and metadata, and flag credentials
that expire soon.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from typing import Any, Final

from agent.cli._common import (
    CliError,
    Exit,
    Subcommands,
    add_command,
    add_name,
    display_names,
    expires_at,
    format_time,
    parse_duration,
    platform_arg,
    print_json,
    read_secret,
)
from client import Client
from client._messages import write_args

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


def _expiry(text: str | None) -> tuple[float | None, bool]:
    """``--expires``: (the time, whether to clear a kept one); a time in the past is refused."""
    if text == "never":
        return None, True
    when = expires_at(text)
    if when is not None and when <= time.time():
        raise CliError(f"--expires {text} is in the past ({format_time(when)}); name a later date or a duration",
                       Exit.USAGE)
    return when, False


def cmd_set(args: argparse.Namespace) -> int:
    meta = _meta_pairs(args.meta)
    when, clear_expiry = _expiry(args.expires)
    if args.clear_meta and meta is None:
        meta = {}
    value = read_secret(f"Value for {args.platform}/{args.type}: ", whole=True)
    # a replaced credential keeps its metadata (--meta merges into it) and its expiry
    request = write_args(args.platform, value, args.type, meta, not args.no_validate, when,
                         keep=True, merge=not args.clear_meta, clear_expiry=clear_expiry)
    with Client() as c:
        result = c.call("store", request)
    print(f"{'stored' if result.get('created', True) else 'replaced'} {args.platform}/{args.type}")
    return Exit.OK


def cmd_get(args: argparse.Namespace) -> int:
    with Client() as c:
        value = c.get(args.platform, args.type)
    if args.clip:
        from agent.cli import clipboard  # only here: most `get`s print

        tool = clipboard.copy(value, args.clip_timeout)
        clears = f"cleared in {args.clip_timeout:g} s if it still holds it" if args.clip_timeout else "not cleared"
        print(f"copied {args.platform}/{args.type} to the clipboard ({tool.name}); {clears}")
        return Exit.OK
    sys.stdout.write(value + "\n")
    return Exit.OK


def _seconds(text: str) -> float:
    """``45``, ``90s``, ``2m``: seconds, 0 or more."""
    try:
        seconds = float(text)
    except ValueError:
        try:
            seconds = parse_duration(text)
        except CliError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    if not 0 <= seconds <= 86400:
        raise argparse.ArgumentTypeError("must be between 0 (never clear) and a day")
    return seconds


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
    value = read_secret(f"Value for {args.platform}: ", whole=True)
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
    p.add_argument("--meta", action="append", default=[], metavar="KEY=VALUE",
                   help="metadata (repeatable), merged into what a replaced credential had")
    p.add_argument("--clear-meta", action="store_true", help="drop the replaced credential's metadata")
    p.add_argument("--no-validate", action="store_true", help="store even if the platform's rule rejects it")
    p.add_argument("--expires", metavar="WHEN",
                   help="expiry: a duration (90d, 12h), a date (2026-03-31), or 'never' to drop a kept one "
                        "(default: a replaced credential keeps its expiry)")
    p = add_command(sub, "get", cmd_get, "print a credential's value")
    add_name(p)
    p.add_argument("--clip", action="store_true",
                   help="copy to the clipboard instead (wl-copy, xclip, xsel or pbcopy), cleared later")
    p.add_argument("--clip-timeout", type=_seconds, default=45.0, metavar="SECONDS",
                   help="clear the clipboard this long after --clip, if it still holds the value "
                        "(default 45; 0 = never)")
    p = add_command(sub, "ls", cmd_ls, "list stored credentials (never values)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p = add_command(sub, "show", cmd_show, "show a credential's metadata (never its value)")
    add_name(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p = add_command(sub, "rm", cmd_rm, "delete a credential")
    add_name(p)
    p = add_command(sub, "validate", cmd_validate, "check a value (from stdin) against the platform's rule")
    p.add_argument("platform", type=platform_arg)
