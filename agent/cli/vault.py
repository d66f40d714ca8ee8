"""``agent init | unlock | lock | rotate-key``: the vault's master key.

Rules of this module:
- a passphrase is read with ``read_secret`` (a hidden prompt, or stdin); a new one
  (``new_passphrase``) twice on a terminal, where an empty one is asked again and a
  short one needs a yes; from stdin, a short one gets a warning and is used;
- whether a vault asks for a passphrase is decided in one place, ``_asks_passphrase``:
  the keystore source never does (the agent fetches the key from the OS keystore).
"""

from __future__ import annotations

import argparse
import sys

from agent.cli._common import (
    KEYRING,
    PASSPHRASE,
    CliError,
    Exit,
    Subcommands,
    add_command,
    ask_hidden,
    confirm,
    interactive,
    read_secret,
    seconds_arg,
    show_recovery_code,
    unlock_at_terminal,
)
from client import Client, config, errors, paths, protocol

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Final

__all__ = ["register", "new_passphrase", "MIN_PASSPHRASE"]

# Below this a new passphrase gets a warning: the vault file is open to offline
# guessing at scrypt's pace, and 12 random characters is what NIST and most password
# managers take as a floor.
MIN_PASSPHRASE: Final = 12
# a terminal user gets this many tries at choosing a new passphrase
NEW_PASSPHRASE_TRIES: Final = 3


def _asks_passphrase(key_source: str | None) -> bool:
    """Whether a vault with this key source is opened (and created) with a passphrase."""
    return key_source == PASSPHRASE


def _short_warning(passphrase: str, of: str) -> str | None:
    if len(passphrase) >= MIN_PASSPHRASE:
        return None
    return (
        f"warning: the passphrase is {len(passphrase)} characters long; use at least {MIN_PASSPHRASE} "
        f"(whoever gets a copy of {of} can try guesses offline)"
    )


def _yes(question: str) -> bool:
    print(question, end="", file=sys.stderr, flush=True)
    return sys.stdin.readline().strip().lower() in ("y", "yes")


def new_passphrase(prompt: str = "New passphrase: ", of: str = "the vault") -> str:
    """A new passphrase (of ``of``, for the warning): asked twice at a terminal (empty:
    asked again; short: needs a yes); from stdin, its first line, a short one with a warning."""
    if not sys.stdin.isatty():
        passphrase = read_secret(prompt)
        if warning := _short_warning(passphrase, of):
            print(f"agent: {warning}", file=sys.stderr)
        return passphrase
    for _ in range(NEW_PASSPHRASE_TRIES):
        passphrase = ask_hidden(prompt)
        if not passphrase:
            print("agent: the passphrase is empty; type one (Ctrl-D stops)", file=sys.stderr)
            continue
        if (warning := _short_warning(passphrase, of)) and not _yes(f"agent: {warning}. Use it anyway? [y/N] "):
            continue
        if ask_hidden("Repeat: ") != passphrase:
            print("agent: the two entries differ; again", file=sys.stderr)
            continue
        return passphrase
    raise CliError(f"no new passphrase after {NEW_PASSPHRASE_TRIES} tries; nothing was changed")


def cmd_init(args: argparse.Namespace) -> int:
    key_source = config.setting("key_source", args.key_source)
    with Client() as c:
        # the first recovery code comes with the vault: made later, it needs proof that you
        # are there (a keystore vault's approval PIN)
        if _asks_passphrase(key_source):
            result = c.init(PASSPHRASE, new_passphrase(), recovery_code=_wants_code(args))
        else:
            code = _wants_code(args)
            try:
                result = c.init(key_source, recovery_code=code)
            except errors.KeystoreUnavailable as e:
                if key_source == KEYRING:  # named by the flag, environment or config file: no fallback
                    raise
                print(f"no working OS keystore ({e.message}); protecting the vault with a passphrase", file=sys.stderr)
                result = c.init(PASSPHRASE, new_passphrase(), recovery_code=code)
        where = f" ({result['backend']})" if result.get("backend") else ""
        print(f"vault created at {result['vault']}; master key in: {result['key_source']}{where}")
        if result.get("recovery_code"):
            show_recovery_code(result["recovery_code"])
    return Exit.OK


def _wants_code(args: argparse.Namespace) -> bool:
    return bool(
        args.recovery_code
        or (
            interactive()
            and confirm("Print a recovery code, the way back in if the passphrase or keystore entry is lost?")
        )
    )


def cmd_unlock(args: argparse.Namespace) -> int:
    bound = "" if args.timeout is None else f"; locking again in {args.timeout:g} s"
    with Client() as c:
        st = c.status()
        if not st["locked"]:
            if args.timeout is not None:  # already open: the bound applies from now
                c.unlock(lock_after=args.timeout)
            print(f"already unlocked{bound}")
            return Exit.OK
        if _asks_passphrase(st["key_source"]) and interactive():
            unlock_at_terminal(c, args.timeout)
        elif _asks_passphrase(st["key_source"]):
            c.unlock(read_secret("Passphrase: "), args.timeout)
        else:
            c.unlock(lock_after=args.timeout)
    print(f"unlocked{bound}")
    return Exit.OK


def cmd_lock(args: argparse.Namespace) -> int:
    try:
        with Client(autostart=False) as c:  # a lock never starts an agent, whatever autostart says
            c.lock()
    except errors.UntrustedSocket:
        raise
    except errors.AgentUnavailable:
        raise CliError(f"no agent is running at {paths.socket_path()}; nothing to lock", Exit.NO_AGENT) from None
    print("locked")
    return Exit.OK


def cmd_rotate_key(args: argparse.Namespace) -> int:
    with Client(timeout=120.0) as c:  # scrypt twice and a keystore round trip
        st = c.status()
        passphrase = new = None
        if _asks_passphrase(st["key_source"]):
            passphrase = read_secret("Current passphrase: ")
            if args.new_passphrase:
                new = new_passphrase()
        elif args.new_passphrase:
            raise CliError("--new-passphrase applies to passphrase vaults; this one keeps its key in the OS keystore")
        result = c.rotate_key(passphrase, new)
    print(f"master key rotated; {result['credentials']} credentials re-encrypted (key source {result['key_source']})")
    if result.get("recovery_code_dropped"):
        print(
            "the recovery code opened the old key and was dropped; make a new one with `agent recovery-code`",
            file=sys.stderr,
        )
    return Exit.OK


def register(sub: Subcommands) -> None:
    p = add_command(sub, "init", cmd_init, "create the vault and its master key")
    p.add_argument(
        "--key-source",
        choices=protocol.KEY_SOURCES,
        default=None,
        help="where the master key lives (default: the OS keystore if it works)",
    )
    p.add_argument("--recovery-code", action="store_true", help="print a recovery code (at a terminal, init asks)")
    p = add_command(sub, "unlock", cmd_unlock, "unlock the vault (asks the passphrase for passphrase vaults)")
    p.add_argument(
        "--timeout",
        type=seconds_arg,
        default=None,
        metavar="D",
        help="lock again after D (seconds, or 15m, 2h), whatever the use",
    )
    add_command(sub, "lock", cmd_lock, "lock: drop the master key and every cached value")


def register_rotation(sub: Subcommands) -> None:
    p = add_command(sub, "rotate-key", cmd_rotate_key, "re-encrypt every credential under a new master key")
    p.add_argument("--new-passphrase", action="store_true", help="passphrase vaults: also change the passphrase")
