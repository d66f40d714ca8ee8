"""Running a command as a child whose output is masked (``agent run --mask``).

Where our stdout is a terminal, the command writes to a pseudo-terminal of its own
(live, line-buffered, coloured output, our window's size, SIGWINCH passed on), and
what it writes is masked on its way to ours; otherwise it writes to pipes.

Signals: SIGINT, SIGTERM, SIGHUP and SIGCHLD are blocked in this process and taken
with ``sigwaitinfo``, so none is lost between starting the child and waiting for it.
One sent to this process (``kill``) is passed on to the child; one the terminal sent
to the whole foreground process group (Ctrl-C, a hangup: ``si_code`` is
``SI_KERNEL``) reached the child already and is not sent twice.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Final

from agent.cli._common import CliError
from agent.cli.masking import Masker

__all__ = ["run_masked"]

# POSIX only (sigwaitinfo, pthread_sigmask): agent run refuses --mask on Windows
assert sys.platform != "win32", "masking: POSIX only"

FORWARDED: Final = frozenset({signal.SIGINT, signal.SIGTERM, signal.SIGHUP})
SI_KERNEL: Final = 0x80  # <asm-generic/siginfo.h>: sent by the kernel (the tty driver)
READ_SIZE: Final = 64 * 1024


def _write_all(fd: int, data: bytes) -> bool:
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except OSError:  # the reader went away: keep draining the child, write nothing
            return False
    return True


def _pump(src: int, dst: int, masker: Masker) -> None:
    writing = True
    try:
        while True:
            try:
                data = os.read(src, READ_SIZE)
            except OSError:  # EIO: a pty whose other end every holder has closed
                break
            if not data:
                break
            out = masker.feed(data)
            writing = writing and _write_all(dst, out)
        if writing:
            _write_all(dst, masker.flush())
    finally:
        os.close(src)


def _terminal() -> tuple[int, int] | None:
    """A pseudo-terminal for the command when our output is a terminal: its output then
    comes live, line by line and in colour, as at the terminal itself (a pipe makes most
    programs buffer it and drop colours). The pty gets our window's size."""
    if not (os.isatty(1) and _one_place()):
        return None
    master, slave = os.openpty()
    _copy_size(slave)
    return master, slave


def _copy_size(slave: int) -> None:
    import fcntl
    import termios

    with contextlib.suppress(OSError):
        size = fcntl.ioctl(1, termios.TIOCGWINSZ, b"\0" * 8)
        fcntl.ioctl(slave, termios.TIOCSWINSZ, size)


if sys.platform == "darwin":

    def _next_signal(waited: frozenset[signal.Signals]) -> tuple[int, bool]:
        """The next signal, and whether the terminal sent it to the whole group.

        macOS has no ``sigwaitinfo``, so the sender is unknown: SIGINT and SIGHUP are
        taken as the terminal's (they reached the child already), SIGTERM as a kill.
        """
        signo = signal.sigwait(waited)
        return signo, signo in (signal.SIGINT, signal.SIGHUP)
else:

    def _next_signal(waited: frozenset[signal.Signals]) -> tuple[int, bool]:
        """The next signal, and whether the terminal sent it to the whole group."""
        info = signal.sigwaitinfo(waited)
        return info.si_signo, info.si_code == SI_KERNEL


def _one_place() -> bool:
    """Whether our stdout and stderr are the same file (a terminal, one log): then the
    command's two streams are shown interleaved, and are masked as one, in the order
    they were written (a value half on each is still one value on the screen)."""
    try:
        out, err = os.fstat(1), os.fstat(2)
    except OSError:
        return False
    return (out.st_dev, out.st_ino) == (err.st_dev, err.st_ino)


def run_masked(command: Sequence[str], env: Mapping[str, str], values: Iterable[str]) -> int:
    secrets = list(values)
    merged = _one_place()
    pty = _terminal()
    waited = FORWARDED | {signal.SIGCHLD, signal.SIGWINCH}
    sys.stdout.flush()
    sys.stderr.flush()
    old = signal.pthread_sigmask(signal.SIG_BLOCK, waited)
    try:
        child = subprocess.Popen(  # the user's own command; the child restores the signal mask
            list(command),
            env=dict(env),
            stdout=pty[1] if pty else subprocess.PIPE,
            stderr=pty[1] if pty else subprocess.STDOUT if merged else subprocess.PIPE,
            preexec_fn=lambda: signal.pthread_sigmask(signal.SIG_SETMASK, old),
        )
    except FileNotFoundError:
        print(f"agent: command not found: {command[0]}", file=sys.stderr)
        return 127
    except ValueError:
        raise CliError("a credential contains a NUL byte and cannot go into an environment variable") from None
    except OSError as e:
        print(f"agent: cannot run {command[0]}: {e.strerror or type(e).__name__}", file=sys.stderr)
        return 126
    if pty:
        os.close(pty[1])  # the command holds it: its exit ends the stream
        streams = [(pty[0], 1)]
    else:
        assert child.stdout is not None
        streams = [(os.dup(child.stdout.fileno()), 1)]
        if child.stderr is not None:
            streams.append((os.dup(child.stderr.fileno()), 2))
        for pipe in (child.stdout, child.stderr):
            if pipe is not None:
                pipe.close()
    # the threads inherit the blocked mask, so every signal comes to _next_signal below
    pumps = [threading.Thread(target=_pump, args=(pipe, fd, Masker(secrets)), daemon=True) for pipe, fd in streams]
    for t in pumps:
        t.start()
    while child.poll() is None:
        signo, from_terminal = _next_signal(waited)
        if signo == signal.SIGWINCH:  # our window changed: the command's pty follows, and says so
            if pty:
                _copy_size(pty[0])
                child.send_signal(signal.SIGWINCH)
        elif signo != signal.SIGCHLD and not from_terminal:
            child.send_signal(signo)
    for t in pumps:
        t.join()
    code = child.returncode
    return code if code >= 0 else 128 - code
