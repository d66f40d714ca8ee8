"""The ``agent`` command's entry (the console script, ``python -m agent``): ``agent get NAME``
and ``agent get NAME --type TYPE`` without the CLI, every other command by ``agent.cli.main``.

Scripts run ``$(agent get NAME)`` more than any other command. The CLI's package loads
argparse, ``re`` (with ``enum``), ``client.config`` and the command helpers before it parses
(~8 ms, a quarter of the process); the client's ``get`` needs none of them. So this module
runs the plain ``get`` with the client alone, and hands the CLI anything it would answer
differently:

- a name that is not plainly legal (``keyring:...``, ``user:...``, an option, a bad name:
  the CLI's argument types and messages);
- a running agent of another version (``agent.cli.versions`` replaces an older one);
- a locked passphrase vault at a terminal (the CLI asks the passphrase);
- every failure is said by ``agent.cli.failed``, in the CLI's words and exit codes.

It imports ``client`` at most, and ``agent.cli`` only for those cases.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["main", "plain_get"]

_NAME_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    names = plain_get(argv)
    if names is not None:
        try:
            code = _get(*names)
            if code is not None:
                sys.stdout.flush()  # here, so that a closed pipe is said as the CLI says it
                return code
        except BaseException as e:  # noqa: BLE001 - said as the CLI says it (a bug keeps its traceback)
            from agent import cli

            return cli.failed(e)
    from agent import cli

    return cli.main(argv)


def plain_get(argv: Sequence[str]) -> tuple[str, str] | None:
    """``(platform, type)`` of ``get NAME`` or ``get NAME --type TYPE`` whose names are legal
    as they stand (client.validation's rule, without ``re``), the platform made canonical;
    None for anything else."""
    if len(argv) not in (2, 4) or argv[0] != "get" or (len(argv) == 4 and argv[2] != "--type"):
        return None
    if argv[1].startswith("-") or argv[-1].startswith("-"):  # an option to argparse
        return None
    from client.names import canonical_platform
    from client.protocol import DEFAULT_TYPE, MAX_NAME

    platform = canonical_platform(argv[1])
    ctype = argv[3] if len(argv) == 4 else DEFAULT_TYPE
    for name in (platform, ctype):
        if not (0 < len(name) <= MAX_NAME and _NAME_CHARS.issuperset(name)):
            return None
    return platform, ctype


def _get(platform: str, ctype: str) -> int | None:
    """``agent get``: the value on stdout and 0; None where the CLI must run the command."""
    import agent
    from client import Client, errors, paths, protocol

    try:  # as agent.cli.versions.ensure_current asks: quiet when none answers
        with Client(paths.socket_file(), timeout=5.0, autostart=False) as c:
            if str(c.hello().get("agent", "unknown")) != agent.__version__:
                return None  # another version runs: the CLI replaces it, or says it is newer
    except errors.AgentError:
        pass
    with Client() as c:
        # agent.cli._common.unlock_on_demand: at a terminal, a locked passphrase vault asks
        if sys.stdin.isatty() and sys.stderr.isatty():
            st = c.status()
            if st["locked"] and st["key_source"] == protocol.KEY_SOURCES[1]:  # the passphrase
                return None
        value = c.get(platform, ctype)
    sys.stdout.write(value + "\n")
    return 0
