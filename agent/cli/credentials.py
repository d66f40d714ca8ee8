"""``agent set | get | ls | show | validate``: credentials by name, and the list
(``rm`` and ``mv`` are ``agent.cli.removal``'s, registered here in their place).

Values come from ``read_secret`` (never argv; all of stdin when piped); only ``get``
prints one. ``set`` over a stored credential keeps its metadata and expiry unless
told. ``ls`` and ``show`` print names, times and metadata, and flag credentials
that expire soon. A name on the command line is ``PLATFORM`` (with ``--type``) or
``PLATFORM/TYPE``. At a terminal, a command that needs the key asks a locked
passphrase vault's passphrase first (``unlock_on_demand``).
"""

from __future__ import annotations

import argparse
import sys
import time

from agent.cli import removal
from agent.cli._common import (
    CliError,
    Exit,
    Subcommands,
    add_command,
    add_name,
    display_names,
    duration_arg,
    expires_at,
    format_time,
    matches,
    name_arg,
    platform_arg,
    print_json,
    read_secret,
    shown,
    unlock_on_demand,
)
from client import Client, config

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any, Final

__all__ = ["register", "cmd_get", "CLIP_TIMEOUT"]

CLIP_TIMEOUT = 45.0  # seconds a copied value stays on the clipboard, as `pass -c`

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


def _expiry_mark(ts: float | None, now: float) -> str:
    if ts is None:
        return "-"
    when = format_time(ts)
    if ts <= now:
        return f"{when} EXPIRED"
    if ts - now <= SOON:
        return f"{when} (in {config.format_duration(ts - now)})"
    return when


def _access(entry: dict[str, Any]) -> str:
    """An entry's access rule in a word: ``confirm``, ``deny``, ``only+deny`` (``-``: none)."""
    rule = entry.get("access")
    if rule is None:
        return "-"
    return ("only+" if rule["only"] else "") + str(rule["rule"])


def _print_ls(entries: list[dict[str, Any]]) -> None:
    now = time.time()
    rows = [
        (*display_names(e), e.get("source", "local"), e["updated"], _expiry_mark(e["expires_at"], now), _access(e))
        for e in entries
    ]
    width = max([24, *(len(r[0]) for r in rows)])
    ruled = any("access" in e for e in entries)  # the column is there when the config has rules
    print(f"{'PLATFORM':<{width}} {'TYPE':<16} {'SOURCE':<10} {'UPDATED':<17} EXPIRES" + ("  ACCESS" if ruled else ""))
    for platform, ctype, source, updated, mark, rule in rows:
        when = format_time(updated)
        line = f"{platform:<{width}} {ctype:<16} {source:<10} {when:<17} {mark}"
        print(f"{line:<{width + 54}}  {rule}" if ruled else line)


def _expiry(text: str | None) -> tuple[float | None, bool]:
    """``--expires``: (the time, whether to clear a kept one); a time in the past is refused."""
    if text == "never":
        return None, True
    when = expires_at(text)
    if when is not None and when <= time.time():
        raise CliError(
            f"--expires {text} is in the past ({format_time(when)}); name a later date or a duration", Exit.USAGE
        )
    return when, False


def cmd_set(args: argparse.Namespace) -> int:
    meta = _meta_pairs(args.meta)
    when, clear_expiry = _expiry(args.expires)
    if args.clear_meta and meta is None:
        meta = {}
    with Client() as c:
        unlock_on_demand(c)  # before the value is typed, not after
        value = read_secret(f"Value for {args.platform}/{args.type}: ", whole=True)
        # a replaced credential keeps its metadata (--meta merges into it) and its expiry
        result = c.put(
            args.platform,
            value,
            args.type,
            meta,
            validate=not args.no_validate,
            expires_at=when,
            keep=True,
            merge=not args.clear_meta,
            clear_expiry=clear_expiry,
            remote=args.remote,
        )
        near = _near_name(c, args.platform) if result.get("created") and not args.remote else None
    done = "stored" if result.get("created", True) else "replaced"
    print(f"{done} {args.platform}/{args.type}" + (f" in {args.remote}" if args.remote else ""))
    if near is not None:  # a typo makes a new platform: say so while it is cheap to undo
        print(
            f"agent: note: {args.platform} is a new platform; did you mean {near}? "
            f"(`agent mv {args.platform} {near}` moves it)",
            file=sys.stderr,
        )
    return Exit.OK


def _near_name(c: Client, platform: str) -> str | None:
    """A known or stored platform close to a new one (``huggingfase``: ``huggingface``)."""
    import difflib

    from client.names import CANONICAL

    if platform in CANONICAL:
        return None
    others = set(CANONICAL)
    if c.status()["credentials"] <= 2_000:  # the stored names too, where listing them is quick
        others |= {e["platform"] for e in c.list() if e["platform"] != platform}
    close = difflib.get_close_matches(platform, sorted(others), n=1, cutoff=0.8)
    return close[0] if close else None


def cmd_get(args: argparse.Namespace) -> int:
    with Client() as c:
        unlock_on_demand(c)
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
    seconds = duration_arg(text)
    if not 0 <= seconds <= 86400:
        raise argparse.ArgumentTypeError("must be between 0 (never clear) and a day")
    return seconds


def cmd_ls(args: argparse.Namespace) -> int:
    with Client() as c:
        entries = c.list()
    if args.patterns:
        entries = [e for e in entries if matches(e, args.patterns)]
    if args.json:
        print_json(entries)
        return Exit.OK
    if not entries:
        print("no credential matches " + " ".join(args.patterns) if args.patterns else "no credentials stored")
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
    rule = entry.get("access")
    if rule is not None:
        only = f"; only {', '.join(shown(o) for o in rule['only'])}" if rule["only"] else ""
        print(f'access:    {rule["rule"]} ([access."{shown(rule["pattern"])}"]{only})')
    for key, value in sorted((entry.get("metadata") or {}).items()):
        print(f"meta.{shown(key)}: {shown(value)}")
    return Exit.OK


def cmd_validate(args: argparse.Namespace) -> int:
    value = read_secret(f"Value for {args.platform}: ", whole=True)
    with Client() as c:
        reason = c.invalid_reason(args.platform, value)
    if reason is None:
        print(f"valid for {args.platform}")
        return Exit.OK
    print(f"invalid for {args.platform}: {reason}", file=sys.stderr)
    return Exit.ERROR


def register(sub: Subcommands) -> None:
    p = add_command(sub, "set", cmd_set, "store a credential (value from a hidden prompt or stdin)")
    add_name(p)
    p.add_argument(
        "--meta",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="metadata (repeatable), merged into what a replaced credential had",
    )
    p.add_argument("--clear-meta", action="store_true", help="drop the replaced credential's metadata")
    p.add_argument("--no-validate", action="store_true", help="store even if the platform's rule rejects it")
    p.add_argument(
        "--expires",
        metavar="WHEN",
        help="expiry: a duration (90d, 12h), a date (2026-03-31), or 'never' to drop a kept one "
        "(default: a replaced credential keeps its expiry)",
    )
    p.add_argument("--remote", type=name_arg, metavar="NAME", help="write it to this team vault (check-and-set)")
    p = add_command(sub, "get", cmd_get, "print a credential's value")
    add_name(p)
    p.add_argument(
        "--clip",
        action="store_true",
        help="copy to the clipboard instead (wl-copy, xclip, xsel or pbcopy), cleared later",
    )
    p.add_argument(
        "--clip-timeout",
        type=_seconds,
        default=CLIP_TIMEOUT,
        metavar="SECONDS",
        help="clear the clipboard this long after --clip, if it still holds the value (default 45; 0 = never)",
    )
    p = add_command(sub, "ls", cmd_ls, "list stored credentials (never values)")
    p.add_argument(
        "patterns",
        nargs="*",
        metavar="PATTERN",
        help="only names matching a glob: 'hf*' (platform), '*/api-secret' (platform/type)",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p = add_command(sub, "show", cmd_show, "show a credential's metadata (never its value)")
    add_name(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    removal.register(sub)  # rm and mv, in their place in `agent --help`
    p = add_command(sub, "validate", cmd_validate, "check a value (from stdin) against the platform's rule")
    p.add_argument("platform", type=platform_arg)
