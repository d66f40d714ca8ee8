"""``agent backup`` and ``agent restore``: the local vault to an encrypted file and back.

Rules of this module:
- the work runs here, in the CLI process, through the client as ``agent export``
  does: names, metadata and expiry from ``list``, values from pipelined ``get``s in
  batches; the file is sealed and opened here (``agent.backup``, ``agent.crypto``); a
  restore writes with ``store`` and ``delete``. So the backup passphrase and its scrypt
  (256 MiB) never reach the agent, and no reply carries the whole vault: the frame limit
  holds for a vault of any size;
- a backup holds the local vault's credentials: team vault keys are left out (counted);
- the file is written as ``export`` writes one: 0600 from its first byte, through a
  temporary file and a link (a rename with ``--force``), never through a symlink, never
  over a file without ``--force``;
- passphrases come from ``--passphrase-file`` (yours, not readable by others), a hidden
  prompt, or stdin's first line; never argv;
- a restore changes nothing until the whole file is opened and checked and the plan
  made; what it prints names credentials, never values.
"""

from __future__ import annotations

import argparse
import os
import sys

from agent.cli import _snapshot
from agent.cli._common import (
    UNLOCK_TRIES,
    CliError,
    Exit,
    Subcommands,
    add_command,
    confirm,
    format_time,
    interactive,
    print_json,
    read_secret,
    shown,
    unlock_on_demand,
)
from agent.cli._snapshot import Key
from client import Client, errors

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence
    from typing import Any, Final

    from agent import backup

__all__ = ["register"]

# scrypt, and thousands of writes each made durable before its reply
TIMEOUT: Final = 120.0


def _new_passphrase() -> str:
    from agent.cli.vault import new_passphrase  # the one rule for a new passphrase (length, repeat)

    return new_passphrase("Backup passphrase: ", "the backup")


def _opened(args: argparse.Namespace, sealed: backup.Sealed) -> backup.Backup:
    """The backup opened with ``--passphrase-file``, or the passphrase typed (up to
    ``UNLOCK_TRIES`` times at a terminal) or given on stdin (once)."""
    from agent import backup

    given = _snapshot.passphrase_file(args.passphrase_file)
    tries = 1 if given is not None or not interactive() else UNLOCK_TRIES
    for attempt in range(1, tries + 1):
        passphrase = given if given is not None else read_secret("Backup passphrase: ")
        try:
            return backup.open_sealed(sealed, passphrase)
        except backup.BackupError as e:
            if e.wrong_passphrase and attempt < tries:
                print("wrong passphrase, try again", file=sys.stderr)
                continue
            raise CliError(f"{args.file}: {e}; nothing was changed") from None
    raise AssertionError("unreachable")


def _why(problem: object) -> str:
    """Why one credential could not be read: the agent's one line (never a value)."""
    return problem.message if isinstance(problem, errors.AgentError) else type(problem).__name__


# --- backup ---------------------------------------------------------------------------------
def cmd_backup(args: argparse.Namespace) -> int:
    import time
    from pathlib import Path

    import agent
    from agent import backup, crypto
    from client.service import write_private_text

    exists = f"{args.file} already exists; nothing was written (--force replaces it)"
    if not args.force and os.path.lexists(args.file):  # before any value is read
        raise CliError(exists)
    given = _snapshot.passphrase_file(args.passphrase_file)  # a bad file fails before the vault is read
    with Client(timeout=TIMEOUT) as c:
        unlock_on_demand(c)
        read, _, team = _snapshot.read_vault(c)
    credentials = [v for v in read.values() if isinstance(v, backup.Credential)]
    failed = {k: v for k, v in read.items() if not isinstance(v, backup.Credential)}
    passphrase = given if given is not None else _new_passphrase()
    created = time.time()
    text = backup.seal(backup.pack(credentials, agent.__version__, created), passphrase)
    try:
        write_private_text(Path(args.file), text, replace=args.force)
    except FileExistsError:
        raise CliError(exists) from None  # one appeared meanwhile
    except OSError as e:
        raise CliError(f"cannot write {args.file}: {e.strerror or type(e).__name__}") from None
    for (platform, ctype), problem in sorted(failed.items()):
        print(f"agent: {platform}/{ctype} was left out: {_why(problem)}", file=sys.stderr)
    if args.json:
        print_json(
            {
                "path": str(Path(args.file).resolve()),
                "created": created,
                "credentials": len(credentials),
                "team_left_out": len(team),
                "failed": [f"{p}/{t}" for p, t in sorted(failed)],
                "kdf": dict(zip(("n", "r", "p"), crypto.BACKUP_KDF, strict=True), name="scrypt"),
            }
        )
    else:
        print(
            f"backed up {len(credentials)} credential{'s' if len(credentials) != 1 else ''} to {args.file} "
            f"(encrypted, mode 0600; {backup.describe_cost(crypto.BACKUP_KDF)})"
        )
        if team:
            print(f"{len(team)} team vault key{'s' if len(team) != 1 else ''} left out: the team vault keeps them")
    return int(Exit.ERROR if failed else Exit.OK)


# --- restore --------------------------------------------------------------------------------
_DONE: Final = {"add": "added", "replace": "replaced", "delete": "deleted", "keep": "kept", "same": "unchanged"}


def _local(c: Client, keys: Iterable[Key]) -> tuple[dict[Key, backup.Credential | str | None], dict[Key, str]]:
    """What a plan compares the backup with: every local credential (the backup's names
    with their values, or why one cannot be read, an access rule's denial included;
    others by name only, for ``--replace``), and the team keys."""
    from agent import backup

    read, listed, team = _snapshot.read_vault(c, keys)
    local: dict[Key, backup.Credential | str | None] = dict.fromkeys(listed)
    for key, value in read.items():
        local[key] = value if isinstance(value, backup.Credential) else _why(value)
    return local, team


def _confirm(args: argparse.Namespace, steps: Sequence[backup.Step]) -> None:
    """``--replace`` that would overwrite or delete: a yes at the terminal, or ``--yes``."""
    replaced = sum(s.action == "replace" for s in steps)
    deleted = sum(s.action == "delete" for s in steps)
    if not args.replace or args.yes or not (replaced or deleted):
        return
    what = f"replace {replaced} and delete {deleted} credential{'s' if replaced + deleted != 1 else ''}"
    if not interactive():
        raise CliError(
            f"restore --replace would {what} of the vault; --yes does it from a script "
            "(--dry-run lists them); nothing was changed",
            Exit.USAGE,
        )
    if not confirm(f"Make the vault equal to {args.file}: {what}?"):
        raise CliError("nothing was changed")


def _apply(c: Client, opened: backup.Backup, steps: Sequence[backup.Step]) -> dict[Key, str | None]:
    """Run the plan's changes; per credential, None once done or the error's message."""
    from client.messages import name_args, write_args

    values = {cred.key: cred for cred in opened.credentials}
    changes = [s for s in steps if s.action in ("add", "replace", "delete")]
    requests = []
    for s in changes:
        if s.action == "delete":
            requests.append(("delete", name_args(*s.key)))
        else:
            cred = values[s.key]
            args = write_args(s.platform, cred.value, s.credential_type, cred.metadata, False, cred.expires_at)
            requests.append(("store", args))
    try:
        replies = _snapshot.pipelined(c, requests)
    except _snapshot.GLOBAL as e:
        raise type(e)(
            f"{e.message}; the restore stopped part way: run it again to finish (it does what is left)"
        ) from None
    return {
        s.key: reply.message if isinstance(reply, errors.AgentError) else None
        for s, reply in zip(changes, replies, strict=True)
    }


def cmd_restore(args: argparse.Namespace) -> int:
    from agent import backup

    try:
        with open(args.file, "rb") as f:
            data = f.read(len(backup.MAGIC))
            if data == backup.MAGIC.encode():  # only a backup is read whole (not a disk image by mistake)
                data += f.read()
    except OSError as e:
        raise CliError(f"cannot read {args.file}: {e.strerror or type(e).__name__}") from None
    try:
        sealed = backup.parse(data)
    except backup.BackupError as e:
        raise CliError(f"{args.file}: {e}; nothing was changed") from None
    with Client(timeout=TIMEOUT) as c:
        unlock_on_demand(c)  # the vault's passphrase first, then the backup's
        opened = _opened(args, sealed)
        local, team = _local(c, [cred.key for cred in opened.credentials])
        steps = backup.plan(opened.credentials, local, team, overwrite=args.overwrite, replace=args.replace)
        failures: dict[Key, str | None] = {}
        if not args.dry_run:
            _confirm(args, steps)
            failures = _apply(c, opened, steps)
    return _report(args, opened, steps, failures)


def _report(
    args: argparse.Namespace, opened: backup.Backup, steps: Sequence[backup.Step], failures: Mapping[Key, str | None]
) -> int:
    def status(s: backup.Step) -> str:
        return "failed" if failures.get(s.key) else _DONE[s.action]

    counts = {word: 0 for word in (*_DONE.values(), "failed")}
    for s in steps:
        counts[status(s)] += 1
    mode = "replace" if args.replace else "overwrite" if args.overwrite else "merge"
    if args.json:
        items: list[dict[str, Any]] = []
        for s in steps:
            item = {"name": s.name, "platform": s.platform, "credential_type": s.credential_type}
            item |= {"action": s.action, "status": status(s)}
            if s.note:
                item["note"] = s.note
            if error := failures.get(s.key):
                item["error"] = error
            items.append(item)
        print_json(
            {
                "path": args.file,
                "dry_run": args.dry_run,
                "mode": mode,
                "backup": {"created": opened.created, "agent_version": opened.agent_version},
                "items": items,
                "counts": counts,
                "history_left": opened.history,
            }
        )
        return int(Exit.ERROR if counts["failed"] else Exit.OK)
    made = format_time(opened.created)
    print(f"{args.file}: {len(opened.credentials)} credentials, made {made} by agent {shown(opened.agent_version)}")
    if args.dry_run:
        print(f"dry run ({mode}): nothing was changed; a restore would:")
    for s in steps:
        if args.dry_run or s.action != "same" or failures.get(s.key):
            word = ("unchanged" if s.action == "same" else s.action) if args.dry_run else status(s)
            note = failures.get(s.key) or s.note
            print(f"  {word:<9} {s.name}" + (f"  ({note})" if note else ""))
    if n := opened.history:
        print(f"history: {n} previous value{'s' if n != 1 else ''} in the backup, not restored (current values only)")
    shown_counts = ", ".join(f"{n} {word}" for word, n in counts.items() if n) or "nothing to do"
    print(("would be: " if args.dry_run else "restored: ") + shown_counts)
    return int(Exit.ERROR if counts["failed"] else Exit.OK)


# --- parser -----------------------------------------------------------------------------
def register(sub: Subcommands) -> None:
    p = add_command(
        sub,
        "backup",
        cmd_backup,
        "write every local credential to a new encrypted file (names too), under a passphrase",
    )
    p.allow_abbrev = False  # `--passphrase SECRET` must not pass for --passphrase-file
    p.add_argument("file", metavar="FILE", help="the backup file to write (mode 0600)")
    p.add_argument(
        "--force", action="store_true", help="replace FILE if it exists (a symlink there is replaced, not followed)"
    )
    p.add_argument(
        "--passphrase-file", metavar="PATH", help="read the backup's passphrase from this 0600 file (scripts, timers)"
    )
    p.add_argument("--json", action="store_true", help="machine-readable summary")
    p = add_command(
        sub,
        "restore",
        cmd_restore,
        "put the credentials of an encrypted backup back into the vault",
        "Adds what the vault lacks and keeps what it has (a credential that differs is reported); "
        "--overwrite lets the backup win, --replace makes the vault equal to the backup.",
    )
    p.allow_abbrev = False
    p.add_argument("file", metavar="FILE", help="a file `agent backup` wrote")
    p.add_argument("--dry-run", action="store_true", help="print the plan by name (never values); change nothing")
    p.add_argument("--overwrite", action="store_true", help="a credential in both that differs takes the backup's")
    p.add_argument(
        "--replace",
        action="store_true",
        help="make the vault equal to the backup: also delete local credentials it lacks (asks first)",
    )
    p.add_argument("--yes", action="store_true", help="--replace without asking (scripts)")
    p.add_argument("--passphrase-file", metavar="PATH", help="read the backup's passphrase from this 0600 file")
    p.add_argument("--json", action="store_true", help="machine-readable plan or report")
