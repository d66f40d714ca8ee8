"""``agent set | get | ls | show | rm | mv | validate``: credentials by name, and the list.

Values come from ``read_secret`` (never argv; all of stdin when piped); only ``get``
prints one. ``set`` over a stored credential keeps its metadata and expiry unless
told. ``ls`` and ``show`` print names, times and metadata, and flag credentials
that expire soon. A name on the command line is ``PLATFORM`` (with ``--type``) or
``PLATFORM/TYPE``. At a terminal, a command that needs the key asks a locked
passphrase vault's passphrase first (``unlock_on_demand``); ``rm`` of more than one
credential asks before it deletes.
"""

from __future__ import annotations

import argparse
import fnmatch
import sys
import time

from agent.cli._common import (
    KEYRING_SHOWN,
    CliError,
    Exit,
    Subcommands,
    add_command,
    add_name,
    confirm,
    display_names,
    duration_arg,
    expires_at,
    format_time,
    interactive,
    name_arg,
    platform_arg,
    print_json,
    read_secret,
    shown,
    type_arg,
    unlock_on_demand,
)
from client import Client, config, errors
from client.validation import DEFAULT_TYPE

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


def _print_ls(entries: list[dict[str, Any]]) -> None:
    now = time.time()
    rows = [
        (*display_names(e), e.get("source", "local"), e["updated"], _expiry_mark(e["expires_at"], now)) for e in entries
    ]
    width = max([24, *(len(r[0]) for r in rows)])
    print(f"{'PLATFORM':<{width}} {'TYPE':<16} {'SOURCE':<10} {'UPDATED':<17} EXPIRES")
    for platform, ctype, source, updated, mark in rows:
        when = format_time(updated)
        print(f"{platform:<{width}} {ctype:<16} {source:<10} {when:<17} {mark}")


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


def _matches(entry: dict[str, Any], patterns: Sequence[str]) -> bool:
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


def cmd_ls(args: argparse.Namespace) -> int:
    with Client() as c:
        entries = c.list()
    if args.patterns:
        entries = [e for e in entries if _matches(e, args.patterns)]
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
    for key, value in sorted((entry.get("metadata") or {}).items()):
        print(f"meta.{shown(key)}: {shown(value)}")
    return Exit.OK


def entry_name(text: str) -> tuple[str, str | None]:
    """argparse type: ``PLATFORM`` or ``PLATFORM/TYPE`` (the type None when not given),
    the platform made canonical; a ``keyring:<service>`` name as ``ls`` prints it is a
    platform whole (its service may hold slashes), its type given by ``--type``."""
    if text.startswith(KEYRING_SHOWN):
        return platform_arg(text), None
    platform, slash, ctype = text.partition("/")
    return platform_arg(platform), type_arg(ctype) if slash else None


_GLOB = frozenset("*?[")


def _rm_names(args: argparse.Namespace) -> tuple[list[tuple[str, str | None]], list[str]]:
    """The names given to ``rm``, and its patterns (``hf*``, ``*/api-secret``, as ``ls`` takes)."""
    names, patterns = [], []
    for text in args.names:
        if _GLOB & set(text):
            patterns.append(text)
            continue
        try:
            names.append(entry_name(text))
        except argparse.ArgumentTypeError as e:
            raise CliError(f"argument PLATFORM[/TYPE]: {e}", Exit.USAGE) from None
    return names, patterns


def _globbed(c: Client, patterns: list[str]) -> list[tuple[str, str]]:
    """The local credentials the patterns match; each pattern must match one."""
    local = [e for e in c.list() if e.get("source", "local") == "local"]
    found = []
    for pattern in patterns:
        hits = [(e["platform"], e["credential_type"]) for e in local if _matches(e, [pattern])]
        if not hits:
            raise errors.NotFound(f"no credential matches {pattern}; nothing was deleted")
        found += hits
    return found


def _rm_targets(c: Client, args: argparse.Namespace) -> list[tuple[str, str]]:
    """The credentials ``rm`` means: the names given and what its patterns match, or with
    ``--all-types`` each type the listing has of each platform (a platform with none, or a
    pattern that matches nothing, fails before anything goes)."""
    names, patterns = _rm_names(args)
    if not args.all_types:
        given = [(p, t or args.type) for p, t in names]
        return list(dict.fromkeys(given + (_globbed(c, patterns) if patterns else [])))
    if patterns:
        raise CliError("--all-types takes platforms, not patterns", Exit.USAGE)
    if any(t is not None for _, t in names):
        raise CliError("--all-types takes platforms, not PLATFORM/TYPE", Exit.USAGE)
    platforms = {p for p, _ in names}
    found = [(e["platform"], e["credential_type"]) for e in c.list() if e["platform"] in platforms]
    missing = platforms - {p for p, _ in found}
    if missing:
        raise errors.NotFound(f"nothing is stored for {', '.join(sorted(missing))}; nothing was deleted")
    return found


def _in_a_remote(c: Client, name: tuple[str, str]) -> None:
    """A name ``ls`` lists from a team vault is not deleted locally: say how it is."""
    for e in c.list():
        if (e["platform"], e["credential_type"]) == name and e.get("source", "local") != "local":
            raise CliError(
                f"{name[0]}/{name[1]} is in the team vault {e['source']}, not the local one: "
                f"`agent rm {name[0]}/{name[1]} --remote {e['source']}` deletes it there"
            )


def cmd_rm(args: argparse.Namespace) -> int:
    if args.remote:
        return _rm_remote(args)
    with Client() as c:
        targets = _rm_targets(c, args)
        # one name: as it always was, no question (a pattern always asks, whatever it matched)
        if len(targets) == 1 and not args.all_types and not any(_GLOB & set(n) for n in args.names):
            unlock_on_demand(c)
            try:
                c.delete(*targets[0])
            except errors.NotFound:
                _in_a_remote(c, targets[0])
                raise
            deleted, failed = targets, []
        else:
            names = ", ".join(f"{p}/{t}" for p, t in targets)
            if not args.yes:
                if not interactive():
                    raise CliError(
                        f"deleting {len(targets)} credentials needs --yes when not at a terminal", Exit.USAGE
                    )
                if not confirm(f"Delete {len(targets)} credentials: {names}?"):
                    raise CliError("nothing was deleted")
            unlock_on_demand(c)
            replies = c.call_many([("delete", {"platform": p, "credential_type": t}) for p, t in targets])
            deleted = [n for n, r in zip(targets, replies, strict=True) if not isinstance(r, errors.AgentError)]
            failed = [(n, r) for n, r in zip(targets, replies, strict=True) if isinstance(r, errors.AgentError)]
    if args.json:
        print_json(
            {
                "deleted": [{"platform": p, "credential_type": t} for p, t in deleted],
                "failed": [
                    {"platform": p, "credential_type": t, "error": r.code, "message": r.message} for (p, t), r in failed
                ],
            }
        )
    else:
        for p, t in deleted:
            print(f"deleted {p}/{t}")
    for (p, t), r in failed:
        print(f"agent: {p}/{t} was not deleted: {r.message}", file=sys.stderr)
    if failed:
        # a locked agent still exits 3
        return Exit.LOCKED if isinstance(failed[0][1], errors.Locked) else Exit.ERROR
    return Exit.OK


def _rm_remote(args: argparse.Namespace) -> int:
    names, patterns = _rm_names(args)
    if len(names) != 1 or patterns or args.all_types:
        raise CliError("--remote deletes one credential at a time", Exit.USAGE)
    platform, ctype = names[0][0], names[0][1] or args.type
    with Client() as c:
        unlock_on_demand(c)
        c.delete(platform, ctype, remote=args.remote)
    print(f"deleted {platform}/{ctype} from {args.remote}")
    return Exit.OK


def cmd_mv(args: argparse.Namespace) -> int:
    (old_p, old_t), (new_p, new_t) = args.old, args.new
    old = (old_p, old_t or args.type)
    new = (new_p, new_t or old[1])  # `agent mv hf huggingface` keeps the type
    with Client() as c:
        unlock_on_demand(c)
        result = c.rename(old[0], new[0], old[1], new[1], replace=args.force)
    if args.json:
        print_json(
            {
                "from": {"platform": old[0], "credential_type": old[1]},
                "to": {"platform": new[0], "credential_type": new[1]},
                "replaced": result["replaced"],
            }
        )
    else:
        print(f"moved {old[0]}/{old[1]} to {new[0]}/{new[1]}" + (" (replacing it)" if result["replaced"] else ""))
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
    p = add_command(sub, "rm", cmd_rm, "delete credentials (asks first when more than one)")
    p.add_argument("names", nargs="+", metavar="PLATFORM[/TYPE]", help="a name, or a pattern as ls takes (hf*)")
    p.add_argument(
        "--type",
        type=type_arg,
        default=DEFAULT_TYPE,
        help=f"credential type of names given without one (default {DEFAULT_TYPE})",
    )
    p.add_argument("--all-types", action="store_true", help="every credential type of each platform")
    p.add_argument("-y", "--yes", action="store_true", help="delete without asking")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--remote", type=name_arg, metavar="NAME", help="delete it from this team vault")
    p = add_command(sub, "mv", cmd_mv, "rename a credential, keeping its value, metadata and expiry")
    p.add_argument("old", type=entry_name, metavar="OLD[/TYPE]")
    p.add_argument("new", type=entry_name, metavar="NEW[/TYPE]")
    p.add_argument(
        "--type",
        type=type_arg,
        default=DEFAULT_TYPE,
        help=f"credential type of OLD when not given (default {DEFAULT_TYPE}); NEW keeps it",
    )
    p.add_argument("-f", "--force", action="store_true", help="replace a credential stored under NEW")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p = add_command(sub, "validate", cmd_validate, "check a value (from stdin) against the platform's rule")
    p.add_argument("platform", type=platform_arg)
