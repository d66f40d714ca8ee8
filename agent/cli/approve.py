"""``agent approve``: answer the reads that an ``[access]`` rule keeps for the user's approval.

Run in another terminal while a program waits for a credential: it shows which
program asks for which key, and approving takes the vault's passphrase (a keystore
vault's approval PIN), which the asking program does not have. ``--deny`` says no
without a secret. ``--set-pin`` sets a keystore vault's approval PIN.
"""

from __future__ import annotations

import argparse
import sys

from agent.cli._common import (
    CliError,
    Exit,
    Subcommands,
    add_command,
    ask_hidden,
    duration_arg,
    print_json,
    read_secret,
    shown,
)
from client import Client

TYPE_CHECKING = False  # as agent.cli: typing is not loaded by `agent get`
if TYPE_CHECKING:
    from typing import Any

__all__ = ["register"]


def _who(r: dict[str, Any]) -> str:
    exe = shown(r["exe"] or f"pid {r['pid']}")
    return f"{exe} ({shown(r['caller'])})" if r["caller"] else exe


def _line(r: dict[str, Any]) -> str:
    return (
        f"request {r['id']}: {_who(r)}, pid {r['pid']}, asks for {shown(r['platform'])}/{shown(r['credential_type'])} "
        f"({shown(r['why'])}; waits {r['waits_s']:g} s more)"
    )


def cmd_approve(args: argparse.Namespace) -> int:
    with Client() as c:
        if args.set_pin:
            return _set_pin(c)
        if args.here:
            return _here(c)
        waiting = c.approvals()
        if args.request is None:
            if args.json:
                print_json(waiting)
                return Exit.OK
            if not waiting:
                print("no read waits for approval")
                return Exit.OK
            if len(waiting) > 1 or not sys.stdin.isatty():
                for r in waiting:
                    print(_line(r))
                print("answer one: agent approve ID [--deny]")
                return Exit.OK
            request = waiting[0]
        else:
            found = [r for r in waiting if r["id"] == args.request]
            if not found:
                raise CliError(f"no read waits for approval as request {args.request} (answered, or timed out)")
            request = found[0]
        print(_line(request), file=sys.stderr)
        if args.deny:
            c.approve(request["id"], allow=False)
            print(f"denied request {request['id']}")
            return Exit.OK
        secret = read_secret("Passphrase or approval PIN (to approve): ")
        remember = None if args.for_s is not None else args.remember
        c.approve(request["id"], secret, remember=remember, for_s=args.for_s)
    scope = (
        f"for {args.for_s:g} s"
        if args.for_s is not None
        else {"once": "this once"}.get(args.remember, f"for this {args.remember}")
    )
    print(f"approved request {request['id']} ({scope})")
    return Exit.OK


def _here(c: Client) -> int:
    import os

    if sys.platform == "win32":
        raise CliError("--here names a terminal for a pinentry, which Windows has not: use `agent approve`")
    if not sys.stdin.isatty():
        raise CliError("--here names this terminal: run it at one")
    tty = os.ttyname(sys.stdin.fileno())
    result = c.approve_here(tty)
    if result["pinentry"] is None:
        print(
            f'{tty} noted, but the config file names no pinentry (pinentry = "/usr/bin/pinentry-tty"): '
            "answer with `agent approve` meanwhile"
        )
    else:
        print(f"reads that need approval will ask here, on {tty}, through {result['pinentry']}")
    return Exit.OK


def _set_pin(c: Client) -> int:
    if not sys.stdin.isatty():
        raise CliError("--set-pin asks at a terminal (a PIN is not read from a pipe)")
    current = None
    if c.status().get("approval_pin"):
        current = ask_hidden("Current approval PIN: ")
    pin = read_secret("New approval PIN: ", confirm=True)
    c.approval_pin(pin, current)
    print("approval PIN set: `agent approve` and key-source changes ask for it")
    return Exit.OK


def register(sub: Subcommands) -> None:
    p = add_command(sub, "approve", cmd_approve, "approve or deny a read that waits for you ([access] rules)")
    p.add_argument("request", nargs="?", type=int, metavar="ID", help="the request to answer (as listed)")
    p.add_argument("--deny", action="store_true", help="say no (no secret needed)")
    p.add_argument(
        "--remember",
        choices=("once", "process", "program"),
        default="process",
        help="what the approval covers: this read, this process (default), or this program",
    )
    p.add_argument("--for", dest="for_s", type=duration_arg, metavar="DURATION", help="any caller, for this long")
    p.add_argument("--set-pin", action="store_true", help="set a keystore vault's approval PIN")
    p.add_argument("--here", action="store_true", help="let the configured pinentry ask on this terminal")
    p.add_argument("--json", action="store_true", help="list the waiting reads as JSON")
