"""Which script or module a Python caller runs, for the audit log.

Every ML connector's executable is ``python3.11``; what tells them apart is
``argv[1]``. From ``/proc/PID/cmdline`` this module takes only the interpreter's own
view of what it runs: the script path (made absolute against ``/proc/PID/cwd``),
``-m MODULE``, ``-c`` (never the code) or ``-`` (stdin). Interpreter options are
skipped along with their values (``-X``, ``-W``), and nothing after the script or
module is read: those are the program's arguments, which may hold anything.
"""

from __future__ import annotations

import os
import re
from typing import Final

__all__ = ["caller_of", "from_argv", "MAX_CALLER", "exited", "start_time", "parent_of", "exe_id"]

# an executable that is a CPython interpreter: python, python3, python3.11, python3.13t
_PYTHON: Final = re.compile(r"python(\d+(\.\d+)?)?[dmt]?")
# options whose value is the next argument when it is not attached (-X dev, -W error)
_TAKES_VALUE: Final = frozenset("XW")
_LONG_WITH_VALUE: Final = frozenset({"--check-hash-based-pycs"})
MAX_CALLER: Final = 1024  # a path; anything longer is cut


def is_python(exe: str | None) -> bool:
    return exe is not None and _PYTHON.fullmatch(os.path.basename(exe)) is not None


def from_argv(argv: list[str]) -> str | None:
    """``/path/script.py``, ``-m module``, ``-c`` or ``-`` from a Python command line
    (the script as given: relative paths are resolved by ``caller_of``)."""
    i = 1
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            return argv[i + 1] if i + 1 < len(argv) else None
        if arg in _LONG_WITH_VALUE:
            i += 2
            continue
        if arg.startswith("--"):
            i += 1
            continue
        if arg == "-" or not arg.startswith("-"):
            return arg
        # a cluster of one-letter options: -u, -uB, -Werror, -mpkg.mod, -c
        for j, letter in enumerate(arg[1:], start=1):
            if letter == "c":
                return "-c"
            if letter == "m":
                module = arg[j + 1 :] or (argv[i + 1] if i + 1 < len(argv) else "")
                return f"-m {module}" if module else None
            if letter in _TAKES_VALUE:
                i += 0 if arg[j + 1 :] else 1  # the value is the next argument
                break
        i += 1
    return None


def _stat(pid: int | None) -> list[bytes]:
    if pid is None or pid <= 0:
        return []
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return []
    # the command name (field 2) may hold spaces and parentheses: split after its last ")"
    return stat[stat.rfind(b")") + 2 :].split()


def exited(pid: int) -> bool:
    """Whether ``pid`` has exited and waits only for its parent to reap it (a zombie: it holds
    no socket, lock or file any more)."""
    fields = _stat(pid)
    return bool(fields) and fields[0] == b"Z"


def start_time(pid: int | None) -> int | None:
    """The process's start time in clock ticks since boot (``/proc/PID/stat`` field 22):
    with the pid, it names one process, not whoever gets the pid later."""
    fields = _stat(pid)
    return int(fields[19]) if len(fields) > 19 else None


def parent_of(pid: int) -> tuple[int, int | None, int] | None:
    """The parent's pid, this process's start time and its controlling tty's device number
    (``tty_nr``, 0 for none), from one read of ``/proc/PID/stat``."""
    fields = _stat(pid)
    return (int(fields[1]), int(fields[19]), int(fields[4])) if len(fields) > 19 else None


def exe_id(pid: int | None) -> tuple[int, int] | None:
    """The (device, inode) of the program ``pid`` runs: the file itself, whatever path a
    mount namespace shows it under."""
    if pid is None:
        return None
    try:
        st = os.stat(f"/proc/{pid}/exe")
    except OSError:
        return None
    return st.st_dev, st.st_ino


def caller_of(pid: int, exe: str | None) -> str | None:
    """What the Python process ``pid`` runs, or None (not Python, gone, /proc hidden)."""
    if not is_python(exe):
        return None
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read(64 * 1024)
    except OSError:
        return None
    argv = os.fsdecode(raw).split("\0")
    caller = from_argv(argv[:-1] if argv and argv[-1] == "" else argv)
    if caller is None or caller.startswith("-"):
        return caller
    if not os.path.isabs(caller):
        try:
            caller = os.path.normpath(os.path.join(os.readlink(f"/proc/{pid}/cwd"), caller))
        except OSError:
            pass
    return caller[:MAX_CALLER]
