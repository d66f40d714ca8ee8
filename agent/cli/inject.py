"""``agent inject``: a config file rendered from a template (as ``op inject``).

- A template holds ``{{ agent://PLATFORM[/TYPE] }}`` where a value goes, and no value:
  it can be committed. Everything else is copied as it is.
- Every reference is fetched in one round trip first (``agent.cli._env``); a missing
  or malformed one names its line, and nothing is written.
- The output is created 0600 from its first byte, atomically, never through a symlink
  (``client.service.write_private_text``); a file already there is kept unless
  ``--force``. ``-`` writes to stdout.
"""

from __future__ import annotations

import argparse
import os
import re
import sys

from agent.cli import _env
from agent.cli._common import CliError, Exit, Subcommands, add_command
from client import errors, validation

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Final

__all__ = ["register", "TEMPLATE_REFERENCE"]

# {{ agent://huggingface }}, {{agent://runpod/api-secret}}: what stands between the braces is checked below
TEMPLATE_REFERENCE: Final = re.compile(r"\{\{\s*agent://([^{}\n]*?)\s*\}\}")
MAX_TEMPLATE: Final = 1024 * 1024  # a config file, not a data set


def _read(path: str) -> str:
    try:
        if path == "-":
            text = sys.stdin.read(MAX_TEMPLATE + 1)
        else:
            with open(path, encoding="utf-8") as f:
                text = f.read(MAX_TEMPLATE + 1)
    except OSError as e:
        raise CliError(f"cannot read {path}: {e.strerror or type(e).__name__}") from None
    except UnicodeDecodeError:
        raise CliError(f"{path} is not UTF-8 text") from None
    if len(text) > MAX_TEMPLATE:
        raise CliError(f"{path} is larger than {MAX_TEMPLATE // 1024} KiB; not a template")
    return text


def _references(text: str, label: str) -> dict[str, tuple[str, str]]:
    """``{"agent://p/t": (p, t)}`` of every reference in ``text``; a malformed one names its line."""
    found: dict[str, tuple[str, str]] = {}
    for m in TEMPLATE_REFERENCE.finditer(text):
        ref = m.group(1)
        platform, _, ctype = ref.partition("/")
        try:
            name = validation.check_key(platform, ctype or validation.DEFAULT_TYPE)
        except errors.BadRequest as e:
            line = text.count("\n", 0, m.start()) + 1
            raise CliError(f"{label}, line {line}: agent://{ref} is not agent://PLATFORM[/TYPE]: {e.message}") from None
        found[f"agent://{ref}"] = name
    return found


def cmd_inject(args: argparse.Namespace) -> int:
    from pathlib import Path

    from client.service import write_private_text

    if args.out != "-" and not args.force and os.path.lexists(args.out):  # before any value is read
        raise CliError(f"{args.out} already exists; nothing was written (--force replaces it)")
    label = "stdin" if args.template == "-" else args.template
    text = _read(args.template)
    refs = _references(text, label)
    if not refs:
        raise CliError(f"{label} holds no {{{{ agent://PLATFORM[/TYPE] }}}} reference; nothing was written")
    # as `agent run` fetches: the references by name, in one round trip, for the audit log's "inject"
    values = _env.fetch(refs, "inject", {r: r for r in refs}, stopped="nothing was written")
    rendered = TEMPLATE_REFERENCE.sub(lambda m: values[f"agent://{m.group(1)}"], text)
    if args.out == "-":
        sys.stdout.write(rendered)
        return Exit.OK
    try:
        write_private_text(Path(args.out), rendered, replace=args.force)
    except FileExistsError:
        raise CliError(f"{args.out} already exists; nothing was written (--force replaces it)") from None
    except OSError as e:
        raise CliError(f"cannot write {args.out}: {e.strerror or type(e).__name__}") from None
    print(f"wrote {args.out} (mode 0600): {len(refs)} references filled", file=sys.stderr)
    return Exit.OK


def register(sub: Subcommands) -> None:
    p = add_command(
        sub,
        "inject",
        cmd_inject,
        "render a config file from a template of {{ agent://PLATFORM[/TYPE] }} references",
        "Each {{ agent://PLATFORM[/TYPE] }} of the template is replaced by the credential; the output is "
        "created 0600, never through a symlink, and an existing file is kept unless --force.",
    )
    p.add_argument("-i", "--in", dest="template", required=True, metavar="TEMPLATE", help="the template ('-': stdin)")
    p.add_argument("-o", "--out", required=True, metavar="FILE", help="the file to write ('-': stdout)")
    p.add_argument("--force", action="store_true", help="replace FILE if it exists")
