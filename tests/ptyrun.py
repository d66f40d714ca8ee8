"""A command on a real pseudo-terminal (``pty.fork``): it is the session leader and
the pty is its controlling terminal, as in an interactive shell."""

from __future__ import annotations

import os
import pty
import select
import signal
import time
from collections.abc import Mapping, Sequence


class PtyProcess:
    def __init__(self, argv: Sequence[str], env: Mapping[str, str]) -> None:
        pid, fd = pty.fork()
        if pid == 0:  # the child: never returns into pytest
            try:
                os.execve(argv[0], list(argv), dict(env))
            finally:
                os._exit(127)
        self.pid, self.fd = pid, fd
        self.output = b""
        self.code: int | None = None

    def read_until(self, text: bytes, timeout: float = 30.0) -> bytes:
        """Output up to and including ``text`` (the timeout is only a guard against a hang)."""
        deadline = time.monotonic() + timeout
        while text not in self.output:
            if time.monotonic() > deadline or not self._read(deadline - time.monotonic()):
                raise AssertionError(f"{text!r} never came; got {self.output!r}")
        return self.output

    def write(self, data: bytes) -> None:
        os.write(self.fd, data)

    def finish(self, timeout: float = 30.0) -> int:
        """Read everything until the terminal closes, then the exit code (128+N for signal N)."""
        deadline = time.monotonic() + timeout
        while self._read(deadline - time.monotonic()):
            pass
        _, status = os.waitpid(self.pid, 0)
        os.close(self.fd)
        self.code = os.waitstatus_to_exitcode(status)
        return self.code if self.code >= 0 else 128 - self.code

    def _read(self, timeout: float) -> bool:
        if timeout <= 0:
            return False
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return False
        try:
            data = os.read(self.fd, 65536)
        except OSError:  # EIO: every holder of the terminal's other end is gone
            return False
        self.output += data
        return bool(data)

    def kill(self) -> None:
        if self.code is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
            self.code = -9
