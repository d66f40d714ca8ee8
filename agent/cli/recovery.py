"""``agent rekey | recovery-code | recover``: the master key under another key source,
and the way back in when its passphrase or keystore entry is lost.

Passphrases and the recovery code come from ``read_secret`` (a hidden prompt, or one
line of stdin each), never argv. The master key itself never leaves the agent.
"""

from __future__ import annotations

import argparse
import sys

from agent.cli._common import (
    PASSPHRASE,
    CliError,
    Exit,
    Subcommands,
    add_command,
    read_secret,
    show_recovery_code,
)
from client import Client, protocol

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["register"]

# scrypt (twice for a passphrase vault) and a keystore round trip
TIMEOUT = 120.0


def _current_passphrase(st: dict[str, Any]) -> str | None:
    return read_secret("Current passphrase: ") if st["key_source"] == PASSPHRASE else None


def _new_passphrase(key_source: str) -> str | None:
    from agent.cli.vault import new_passphrase  # the one rule for a new passphrase (length, repeat)

    return new_passphrase() if key_source == PASSPHRASE else None


def _report(result: dict[str, Any]) -> None:
    print(f"master key now in: {result['key_source']}")
    if not result["old_removed"]:
        print(
            "agent: its old home could not be removed yet (see the agent's log); the next unlock retries",
            file=sys.stderr,
        )


def cmd_rekey(args: argparse.Namespace) -> int:
    with Client(timeout=TIMEOUT) as c:
        st = c.status()
        if st["key_source"] == args.key_source:
            raise CliError(f"the master key is in {args.key_source} already")
        passphrase = _current_passphrase(st)
        result = c.rekey(args.key_source, passphrase, _new_passphrase(args.key_source))
    _report(result)
    return Exit.OK


def cmd_recovery_code(args: argparse.Namespace) -> int:
    with Client(timeout=TIMEOUT) as c:
        code = c.recovery_code(_current_passphrase(c.status()))
    show_recovery_code(code)
    return Exit.OK


def cmd_recover(args: argparse.Namespace) -> int:
    with Client(timeout=TIMEOUT) as c:
        key_source = args.key_source or c.status()["key_source"]
        code = read_secret("Recovery code: ")
        result = c.recover(code, key_source, _new_passphrase(key_source))
    _report(result)
    print("unlocked")
    return Exit.OK


def register(sub: Subcommands) -> None:
    p = add_command(sub, "rekey", cmd_rekey, "move the master key to another key source (nothing re-encrypted)")
    p.add_argument("--key-source", choices=protocol.KEY_SOURCES, required=True, help="where the key goes")
    add_command(sub, "recovery-code", cmd_recovery_code, "make a new recovery code (shown once)")
    p = add_command(sub, "recover", cmd_recover, "open the vault with its recovery code and give the key a new home")
    p.add_argument(
        "--key-source", choices=protocol.KEY_SOURCES, default=None, help="where the key goes (default: where it was)"
    )
