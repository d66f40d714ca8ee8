"""``agent rm | mv``: deleting and renaming credentials.

A name is ``PLATFORM`` (with ``--type``) or ``PLATFORM/TYPE``; ``rm`` also takes the
patterns ``ls`` takes (``hf*``, ``*/api-secret``), and asks before it deletes more than
one credential or what a pattern matched. A team vault's key is deleted there with
``--remote``; ``rm`` of one that ``ls`` lists from a team vault says so.
"""

from __future__ import annotations

import argparse
import sys

from agent.cli._common import (
    KEYRING_SHOWN,
    CliError,
    Exit,
    Subcommands,
    add_command,
    confirm,
    interactive,
    matches,
    name_arg,
    platform_arg,
    print_json,
    type_arg,
    unlock_on_demand,
)
from client import Client, errors
from client.validation import DEFAULT_TYPE

__all__ = ["register", "entry_name"]


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
        hits = [(e["platform"], e["credential_type"]) for e in local if matches(e, [pattern])]
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
        _undo_hint(deleted)
    for (p, t), r in failed:
        print(f"agent: {p}/{t} was not deleted: {r.message}", file=sys.stderr)
    if failed:
        # a locked agent still exits 3
        return Exit.LOCKED if isinstance(failed[0][1], errors.Locked) else Exit.ERROR
    return Exit.OK


def _undo_hint(deleted: list[tuple[str, str]]) -> None:
    """How to take a deletion back (``agent history``), on stderr: stdout stays one line per
    credential. Said when this config keeps history (the agent's, unless it was started
    with another environment)."""
    from client import config

    if not deleted or config.setting("history_keep") <= 0:
        return
    if len(deleted) == 1:
        platform, ctype = deleted[0]
        name = platform if ctype == DEFAULT_TYPE else f"{platform}/{ctype}"
        print(f"agent: kept in its history: `agent history {name} --restore` brings it back", file=sys.stderr)
    else:
        print("agent: kept in their history: `agent history` lists them, `--restore` brings one back", file=sys.stderr)


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


def register(sub: Subcommands) -> None:
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
