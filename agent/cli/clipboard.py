"""``agent get --clip``: copy a value to the clipboard and clear it later (as ``pass -c``).

- The value goes to the clipboard tool on its stdin, never in argv: ``wl-copy``
  (Wayland), ``xclip`` or ``xsel`` (X11), ``pbcopy`` (macOS), the first one present
  whose display is there.
- Clearing is a detached helper process (its own session, in ``/``, an isolated
  interpreter on this installation's code, only the variables ``client.spawn``
  passes): it gets the value on a pipe, waits, reads the clipboard back and clears
  it only if it still holds the value, so something copied since is left alone.
  Its argv holds the tool's name and the delay, nothing else.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Final

from agent.cli._common import CliError
from client import protocol, spawn

__all__ = ["Tool", "TOOLS", "find_tool", "copy", "watch", "DEFAULT_CLEAR"]

DEFAULT_CLEAR: Final = 45.0  # seconds, as pass
TOOL_TIMEOUT: Final = 10.0  # a clipboard tool that hangs (a dead display) must not hang us


@dataclasses.dataclass(frozen=True)
class Tool:
    name: str
    copy: tuple[str, ...]
    paste: tuple[str, ...]
    clear: tuple[str, ...] | None  # None: copy an empty string
    display: str | None  # the variable its display server needs; None: macOS

    def usable(self) -> bool:
        if shutil.which(self.name) is None:
            return False
        return sys.platform == "darwin" if self.display is None else bool(os.environ.get(self.display))


TOOLS: Final = (
    Tool("wl-copy", ("wl-copy",), ("wl-paste", "--no-newline"), ("wl-copy", "--clear"), "WAYLAND_DISPLAY"),
    Tool(
        "xclip",
        ("xclip", "-selection", "clipboard", "-in"),
        ("xclip", "-selection", "clipboard", "-out"),
        None,
        "DISPLAY",
    ),
    Tool(
        "xsel",
        ("xsel", "--clipboard", "--input"),
        ("xsel", "--clipboard", "--output"),
        ("xsel", "--clipboard", "--clear"),
        "DISPLAY",
    ),
    Tool("pbcopy", ("pbcopy",), ("pbpaste",), None, None),
)
_BY_NAME: Final = {t.name: t for t in TOOLS}
# -I: nothing from the caller's directory or PYTHONPATH; the one path given is put first
_BOOT: Final = (
    "import sys; sys.path.insert(0, sys.argv.pop(1)); from agent.cli import clipboard; "
    "sys.exit(clipboard.watch(sys.argv[1:]))"
)


def find_tool() -> Tool:
    for tool in TOOLS:
        if tool.usable():
            return tool
    raise CliError(
        "no clipboard tool to copy with: install wl-clipboard (Wayland), xclip or xsel (X11), with "
        "WAYLAND_DISPLAY or DISPLAY set; or print the value with `agent get` without --clip"
    )


def _put(tool: Tool, data: bytes) -> None:
    # stdout/stderr to /dev/null: xclip and xsel leave a process behind to serve the
    # selection, and a pipe it inherited would never reach EOF
    try:
        done = subprocess.run(
            tool.copy,
            input=data,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=TOOL_TIMEOUT,
            cwd="/",
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise CliError(f"{tool.name} could not be run: {getattr(e, 'strerror', None) or type(e).__name__}") from None
    if done.returncode != 0:
        raise CliError(f"{tool.name} failed (exit status {done.returncode}); is the display reachable?")


def copy(value: str, clear_after: float) -> Tool:
    """Put ``value`` on the clipboard; unless ``clear_after`` is 0, start the helper that clears it."""
    tool = find_tool()
    _put(tool, value.encode())
    if clear_after > 0:
        _start_watch(tool, value, clear_after)
    return tool


def _start_watch(tool: Tool, value: str, clear_after: float) -> None:
    root = spawn.code_root()
    argv = (
        [sys.executable, "-I", "-c", _BOOT, root]
        if root is not None
        else [sys.executable, "-I", "-m", "agent.cli.clipboard"]
    )
    helper = subprocess.Popen(
        [*argv, tool.name, repr(clear_after)],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd="/",
        env=spawn.clean_env(),
        start_new_session=True,
    )
    assert helper.stdin is not None
    helper.stdin.write(value.encode())
    helper.stdin.close()


def watch(argv: Sequence[str]) -> int:
    """The helper: the value on stdin; after the delay, clear the clipboard if it still holds it."""
    tool, delay = _BY_NAME[argv[0]], float(argv[1])
    value = sys.stdin.buffer.read(protocol.MAX_VALUE * 4 + 1)
    sys.stdin.close()
    time.sleep(delay)
    try:
        now = subprocess.run(
            tool.paste, stdin=subprocess.DEVNULL, capture_output=True, timeout=TOOL_TIMEOUT, cwd="/", check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return 1
    # xclip/xsel give the bytes back as they were copied; some tools add a newline
    if now.returncode != 0 or now.stdout.rstrip(b"\n") != value:
        return 0  # something else was copied since (or the clipboard is gone): leave it
    if tool.clear is None:
        _put(tool, b"")
    else:
        subprocess.run(
            tool.clear,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=TOOL_TIMEOUT,
            cwd="/",
            check=False,
        )
    return 0


if __name__ == "__main__":
    sys.exit(watch(sys.argv[1:]))
