"""A real terminal for tests: a command on a pty that is its controlling tty
(``pty.fork``: the command is the session leader), so ``getpass`` prompts on /dev/tty
and Ctrl-C is the kernel's SIGINT, as for a person at an interactive shell.

    t = Terminal(a.command("get", "runpod"), a.env)
    t.answer("Passphrase: ", PASSPHRASE)
    assert t.wait() == 0 and RP in t.output

Timeouts only bound a hang; a test never waits for a time.
"""

from __future__ import annotations

import contextlib
import os
import pty
import select
import signal
import time
from collections.abc import Mapping, Sequence


class Terminal:
    """``argv`` (``argv[0]`` an absolute path) with stdin, stdout and stderr on one pty."""

    def __init__(self, argv: Sequence[str], env: Mapping[str, str]) -> None:
        pid, fd = pty.fork()
        if pid == 0:  # the child: never returns into pytest
            try:
                os.execve(argv[0], list(argv), dict(env))
            finally:
                os._exit(127)
        self.pid, self.fd = pid, fd
        self.output = ""  # everything the terminal showed so far
        self._seen = 0  # output before this was matched by an earlier expect
        self.code: int | None = None

    def _read(self, timeout: float) -> bool:
        """Read what the terminal shows within ``timeout``; False once it is closed."""
        if not select.select([self.fd], [], [], max(timeout, 0))[0]:
            return True
        try:
            data = os.read(self.fd, 65536)
        except OSError:  # EIO: every holder of the terminal's other end is gone
            return False
        self.output += data.decode(errors="replace")
        return bool(data)

    def expect(self, text: str, timeout: float = 60.0) -> str:
        """Read until ``text`` appears after what earlier calls matched; the output of this step."""
        deadline = time.monotonic() + timeout
        start = self._seen
        while text not in self.output[start:]:
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} never appeared; the terminal showed {self.output[start:]!r}")
            if not self._read(min(0.2, deadline - time.monotonic())):
                raise AssertionError(f"the command ended without {text!r}; the terminal showed {self.output[start:]!r}")
        self._seen = self.output.index(text, start) + len(text)
        return self.output[start:self._seen]

    def send(self, text: str) -> None:
        """Type ``text`` (``"\\x03"`` is Ctrl-C, ``"\\x04"`` Ctrl-D)."""
        os.write(self.fd, text.encode())

    def answer(self, prompt: str, line: str) -> None:
        """Wait for the next ``prompt``, then type ``line`` and Enter."""
        self.expect(prompt)
        self.send(line + "\r")

    def wait(self, timeout: float = 60.0) -> int:
        """Read to the end, then the exit code (128+N for signal N, as a shell says)."""
        deadline = time.monotonic() + timeout
        while self._read(0.2):
            if time.monotonic() > deadline:
                self.kill()
                raise AssertionError(f"the command did not finish; the terminal showed {self.output!r}")
        _, status = os.waitpid(self.pid, 0)
        os.close(self.fd)
        code = os.waitstatus_to_exitcode(status)
        self.code = code if code >= 0 else 128 - code
        return self.code

    def kill(self) -> None:
        """SIGKILL the command if it is still running (a test's cleanup)."""
        if self.code is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.code = 128 + signal.SIGKILL
