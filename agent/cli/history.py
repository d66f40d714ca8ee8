"""``agent history``: the previous values an overwrite or an ``rm`` kept, shown, read back, restored.

Without a name it lists every name's previous values (what was deleted shows up there);
with one, that credential's, newest first: version 1 is the value it had last before the
current one (or before it was deleted). Listings never show values; ``--show N`` prints
one, as ``agent get`` does, and ``--restore [N]`` makes it current again (the value it
replaces joins the history, so a restore is undone the same way).
"""

from __future__ import annotations

import argparse
import sys

from agent.cli._common import (
    CliError,
    Exit,
    Subcommands,
    add_command,
    format_time,
    print_json,
    shown,
    type_arg,
    unlock_on_demand,
)
from agent.cli.removal import entry_name
from client import Client
from client.validation import DEFAULT_TYPE

TYPE_CHECKING = False  # as agent.cli: typing is not loaded by `agent get`
if TYPE_CHECKING:
    from typing import Any

__all__ = ["register"]


def _table(rows: list[dict[str, Any]], with_names: bool) -> None:
    def line(platform: str, ctype: str, version: object, set_at: str, replaced: str, how: str, by: str) -> str:
        names = f"{platform:<24} {ctype:<16} " if with_names else ""
        return f"{names}{version!s:<8} {set_at:<16}  {replaced:<16}  {how:<9} {by}"

    print(line("PLATFORM", "TYPE", "VERSION", "SET", "REPLACED", "HOW", "BY"))
    for r in rows:
        print(
            line(
                shown(r["platform"]),
                shown(r["credential_type"]),
                r["version"],
                format_time(r["set_at"]),
                format_time(r["replaced"]),
                shown(r["reason"]),
                shown(r["caller"] or r["by"] or "-"),
            )
        )


def cmd_history(args: argparse.Namespace) -> int:
    name = None if args.name is None else (args.name[0], args.name[1] or args.type)
    if name is None and (args.show is not None or args.restore is not None):
        raise CliError("--show and --restore need a credential's name (agent history NAME --show N)", Exit.USAGE)
    with Client() as c:
        if args.show is not None or args.restore is not None:
            unlock_on_demand(c)
        if args.show is not None:
            assert name is not None
            return _show(c, name, args.show, args.json)
        if args.restore is not None:
            assert name is not None
            return _restore(c, name, args.restore, args.json)
        rows = c.history(*name) if name is not None else c.history()
    if args.json:
        print_json(rows)
    elif not rows:
        what = "any credential" if name is None else f"{name[0]}/{name[1]}"
        print(f"no previous values of {what} are kept")
    else:
        _table(rows, with_names=name is None)
    return Exit.OK


def _show(c: Client, name: tuple[str, str], version: int, json: bool) -> int:
    old = c.history_value(name[0], version, name[1])
    if json:
        print_json({"platform": name[0], "credential_type": name[1], "version": version, **old})
    else:
        sys.stdout.write(old["value"] + "\n")
    return Exit.OK


def _restore(c: Client, name: tuple[str, str], version: int, json: bool) -> int:
    result = c.history_restore(name[0], version, name[1])
    if json:
        print_json({"platform": name[0], "credential_type": name[1], "version": version, **result})
        return Exit.OK
    said = f"restored {name[0]}/{name[1]} to version {version} (set {format_time(result['set_at'])})"
    if not result["created"]:
        said += "; the value it replaced is version 1 of its history now"
    print(said)
    return Exit.OK


def _version(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("a version is a whole number: 1 is the newest previous value") from None
    if n < 1:
        raise argparse.ArgumentTypeError("a version is 1 (the newest previous value) or more")
    return n


def register(sub: Subcommands) -> None:
    p = add_command(sub, "history", cmd_history, "previous values of a credential: list, show, restore")
    p.add_argument("name", nargs="?", type=entry_name, metavar="PLATFORM[/TYPE]", help="one credential (else all)")
    p.add_argument("--type", type=type_arg, default=DEFAULT_TYPE, help=f"credential type (default {DEFAULT_TYPE})")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--show", type=_version, metavar="N", help="print the value of version N")
    what.add_argument(
        "--restore",
        type=_version,
        nargs="?",
        const=1,
        metavar="N",
        help="make version N (default 1, the newest) current again",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
