"""A real terminal for CLI tests: the ``agent`` command on a pty that is its controlling
tty (``pty.fork``), so ``getpass`` prompts on /dev/tty as it does for a person."""

from __future__ import annotations

import os
import pty
import select
import signal
import sys
import time
from collections.abc import Mapping


class Terminal:
    """``python -m agent ARGS`` with stdin, stdout and stderr on one pty."""

    def __init__(self, env: Mapping[str, str], *args: str) -> None:
        argv = [sys.executable, "-m", "agent", *args]
        pid, fd = pty.fork()
        if pid == 0:  # the child: the pty is its controlling terminal
            try:
                os.execve(sys.executable, argv, dict(env))
            finally:
                os._exit(127)
        self.pid, self.fd = pid, fd
        self.output = ""
        self._seen = 0
        self.status: int | None = None

    def _read(self, timeout: float) -> bool:
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return True
        try:
            data = os.read(self.fd, 4096)
        except OSError:  # EIO: the child closed the terminal
            return False
        if not data:
            return False
        self.output += data.decode(errors="replace")
        return True

    def expect(self, text: str, timeout: float = 60.0) -> None:
        """Read until ``text`` appears after what earlier calls matched."""
        deadline = time.monotonic() + timeout
        while (at := self.output.find(text, self._seen)) < 0:
            if time.monotonic() > deadline or not self._read(0.2):
                raise AssertionError(f"{text!r} never appeared; the terminal showed {self.output!r}")
        self._seen = at + len(text)

    def answer(self, prompt: str, line: str) -> None:
        """Wait for the next ``prompt``, then type ``line`` and Enter."""
        self.expect(prompt)
        os.write(self.fd, line.encode() + b"\r")

    def wait(self, timeout: float = 60.0) -> int:
        """Read to the end and return the exit status."""
        deadline = time.monotonic() + timeout
        while self._read(0.2):
            if time.monotonic() > deadline:
                os.kill(self.pid, signal.SIGKILL)
                raise AssertionError(f"the command did not finish; the terminal showed {self.output!r}")
        _, status = os.waitpid(self.pid, 0)
        os.close(self.fd)
        self.status = os.waitstatus_to_exitcode(status)
        return self.status
