"""``agent audit``: who read or changed which credential, from the agent's audit log
(names, processes and results; never values)."""

from __future__ import annotations

import argparse
import time

from agent.cli._common import (
    Exit,
    Subcommands,
    add_command,
    display_names,
    format_time,
    parse_duration,
    print_json,
    shown,
)
from client import Client

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["register"]


def _caller(row: dict[str, Any]) -> str:
    """``/usr/bin/python3.11 [says: /srv/train.py]``, ``... [says: -m sweeps.agent -> torchrun]``:
    the executable as the kernel knows it, then what the caller says of itself."""
    claims = [row["caller"]] if row.get("caller") else []
    if row.get("command"):
        claims.append(f"-> {row['command']}")
    said = f" [says: {' '.join(claims)}]" if claims else ""
    return shown((row["exe"] or "-") + said)  # a path or a module name may hold anything, escapes included


def cmd_audit(args: argparse.Namespace) -> int:
    since = None if args.since is None else time.time() - parse_duration(args.since)
    with Client() as c:
        rows = c.audit(since, args.platform, args.limit, args.by)
    if args.json:
        print_json(rows)
        return Exit.OK
    if not rows:
        print("no audit records")
        return Exit.OK
    print(f"{'TIME':<19} {'OP':<10} {'CREDENTIAL':<32} {'PID':>7} {'UID':>6} {'RESULT':<16} {'TIMES':>5} CALLER")
    for r in rows:
        when = format_time(r["time"], "%Y-%m-%d %H:%M:%S")
        if r["platform"] is None:
            name = "-"
        elif r["platform"] == "*":  # agent.audit.SEVERAL: one caller's failed lookups of several names
            name = "(several names)"
        else:
            name = "/".join(display_names({"platform": r["platform"], "credential_type": r["credential_type"]}))
        pid = "-" if r["pid"] is None else str(r["pid"])
        uid = "-" if r["uid"] is None else str(r["uid"])
        print(f"{when:<19} {r['op']:<10} {name:<32} {pid:>7} {uid:>6} {r['result']:<16} {r['count']:>5} {_caller(r)}")
    return Exit.OK


def register(sub: Subcommands) -> None:
    p = add_command(sub, "audit", cmd_audit, "show who read or changed which credential (never values)")
    p.add_argument("--since", metavar="DURATION", help="only the last DURATION (e.g. 1h, 7d)")
    p.add_argument("--platform", help="only this platform")
    p.add_argument(
        "--by",
        metavar="COMMAND",
        help="only calls by this program: an executable, a Python script or module (train.py, "
        "sweeps.agent), or a command `agent exec`/`agent run` started",
    )
    p.add_argument("--limit", type=int, default=1000, help="at most this many newest records (default 1000)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
