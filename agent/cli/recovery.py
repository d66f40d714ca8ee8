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
    """The proof that you are there: a passphrase vault's passphrase, a keystore vault's approval PIN."""
    if st["key_source"] == PASSPHRASE:
        return read_secret("Current passphrase: ")
    if st.get("approval_pin") is False:
        raise CliError(
            "this keystore vault has no approval PIN yet, and moving its key or making a recovery code needs one "
            "(so that no other program of yours can): set it with `agent approve --set-pin`"
        )
    return read_secret("Approval PIN: ")


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
            change = (
                "; to change the passphrase: `agent rotate-key --new-passphrase`"
                if args.key_source == PASSPHRASE
                else ""
            )
            raise CliError(f"the master key is in {args.key_source} already{change}")
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
        st = c.status()
        if st.get("recovery_code") is False:  # an older agent does not say: it is asked below
            raise CliError("this vault has no recovery code (`agent recovery-code` makes one, while you can unlock)")
        key_source = args.key_source or st["key_source"]
        code = read_secret("Recovery code: ")
        if not _looks_like_a_code(code):  # before a new passphrase is asked for, twice
            raise CliError("that is not a recovery code: 32 letters A-Z and digits 2-7, in groups of four")
        try:
            new = _new_passphrase(key_source)
        except CliError:
            if sys.stdin.isatty():
                raise
            raise CliError(
                "recovering into a passphrase vault needs the new passphrase on the line after the code "
                "(or --key-source keyring)"
            ) from None
        result = c.recover(code, key_source, new)
    _report(result)
    print("unlocked")
    return Exit.OK


def _looks_like_a_code(code: str) -> bool:
    """32 base32 characters once spaces and dashes go, in any case (as the agent reads it)."""
    import re

    return re.fullmatch(r"[A-Z2-7]{32}", "".join(code.split()).replace("-", "").upper()) is not None


def register(sub: Subcommands) -> None:
    p = add_command(sub, "rekey", cmd_rekey, "move the master key to another key source (nothing re-encrypted)")
    p.add_argument("--key-source", choices=protocol.KEY_SOURCES, required=True, help="where the key goes")
    add_command(sub, "recovery-code", cmd_recovery_code, "make a new recovery code (shown once)")
    p = add_command(sub, "recover", cmd_recover, "open the vault with its recovery code and give the key a new home")
    p.add_argument(
        "--key-source", choices=protocol.KEY_SOURCES, default=None, help="where the key goes (default: where it was)"
    )
