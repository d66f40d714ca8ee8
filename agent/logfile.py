"""The agent's own log: to stderr, and bounded when stderr is the log file.

``agent start`` (and launchd) hands the agent its log file as stderr, opened for
appending; nothing would ever shorten it, and a failure that repeats (a node that
refuses, a keystore that does not answer) could fill the disk. When stderr is the log
file at ``client.paths.log_path()``, records go through a handler that starts a new file
once it passes ``log_max_bytes`` and keeps one older file (``agent.log.1``): at most about
twice that on disk. The new file is made ``0600`` and put in place of stderr too, so a
traceback written straight to stderr lands in the current file. Under systemd, stderr is
the journal, which bounds itself: records go there as they are.
"""

from __future__ import annotations

import io
import logging
import logging.handlers
import os
import stat
import sys
from pathlib import Path
from typing import Final

__all__ = ["FORMAT", "setup"]

FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _Bounded(logging.handlers.RotatingFileHandler):
    """A RotatingFileHandler whose files are 0600 and whose current file is also fd 2."""

    def _open(self) -> io.TextIOWrapper:
        fd = os.open(self.baseFilename, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        return os.fdopen(fd, "a", encoding=self.encoding, errors=self.errors)

    def doRollover(self) -> None:
        super().doRollover()
        if self.stream is not None:
            os.dup2(self.stream.fileno(), 2)


def _same_file(fd: int, path: Path) -> bool:
    try:
        a, b = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return stat.S_ISREG(a.st_mode) and (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def setup(level: int, path: Path, max_bytes: int) -> logging.Handler:
    """Send the agent's records to stderr, bounded as the module says; the handler used."""
    handler: logging.Handler
    if max_bytes > 0 and _same_file(2, path):
        handler = _Bounded(path, maxBytes=max_bytes, backupCount=1, encoding="utf-8", delay=False)
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT))
    logging.basicConfig(level=level, handlers=[handler])
    return handler
