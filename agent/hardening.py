"""Process hardening at agent start; each step reports whether it took effect.

Best effort by design (as ssh-agent's platform_disable_tracing and rbw): a step that
fails is reported in ``agent status``, never fatal.

Windows has no core-dump limit, no PR_SET_DUMPABLE and no PT_DENY_ATTACH: a process
of the same user may open the agent and read its memory (as any debugger does), and
that is not prevented. What is done there: umask 077 (for the files Python makes) and
``SetErrorMode`` so that a crash shows no Windows Error Reporting dialog that holds the
process, and its memory, until someone answers it (``wer_dialog_off``). Whether WER
writes a crash dump is machine policy (LocalDumps), not ours to change.
"""

from __future__ import annotations

import ctypes
import os
import sys

__all__ = ["harden", "raise_fd_limit", "close_inherited"]

_PR_SET_DUMPABLE = 4
_PR_GET_DUMPABLE = 3
_PT_DENY_ATTACH = 31


def _libc() -> ctypes.CDLL:
    # the process's own symbols, libc's among them: ctypes.util.find_library would
    # import shutil, tempfile, bz2 and lzma into every agent for one lookup
    return ctypes.CDLL(None, use_errno=True)


def _no_core_dumps() -> bool:
    if sys.platform == "win32":
        return False
    import resource

    try:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        return resource.getrlimit(resource.RLIMIT_CORE) == (0, 0)
    except (OSError, ValueError):
        return False


def _not_dumpable() -> bool:
    """Linux: no core dumps and no ptrace attach by same-uid processes (PR_SET_DUMPABLE 0)."""
    try:
        libc = _libc()
        if libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
            return False
        return bool(libc.prctl(_PR_GET_DUMPABLE, 0, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def _deny_attach() -> bool:
    """macOS: refuse debugger attachment (PT_DENY_ATTACH)."""
    try:
        return bool(_libc().ptrace(_PT_DENY_ATTACH, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def harden() -> dict[str, bool]:
    """Apply every step that exists on this OS; return what took effect."""
    os.umask(0o077)
    report = {"umask_077": os.umask(0o077) == 0o077}
    if sys.platform == "win32":
        from client import win32

        report["wer_dialog_off"] = win32.set_error_mode()
        return report
    report["rlimit_core_0"] = _no_core_dumps()
    if sys.platform.startswith("linux"):
        report["pr_set_dumpable_0"] = _not_dumpable()
    elif sys.platform == "darwin":
        report["pt_deny_attach"] = _deny_attach()
    return report


def raise_fd_limit() -> int:
    """Raise the soft descriptor limit to the hard one; return the new soft limit
    (0 on Windows, where handles have no such limit)."""
    if sys.platform == "win32":
        return 0
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        return target
    except (OSError, ValueError):
        return soft


def release_memory() -> bool:
    """Give the heap that freed objects leave back to the system (glibc's ``malloc_trim``),
    so that a locked agent is small again; whether it could. Python frees its own empty
    arenas itself; a plaintext longer than 512 bytes, and the rows an unlock read, live
    in malloc's heap, which keeps what is freed unless asked."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        return bool(_libc().malloc_trim(0))
    except (OSError, AttributeError):  # not glibc (musl has no malloc_trim)
        return False


def close_inherited(keep: tuple[int, ...] = ()) -> None:
    """Close every descriptor from 3 up but ``keep``: those listed in /proc/self/fd (or
    /dev/fd), as subprocess does, not every number up to a limit that may be 2**30."""
    for listing in ("/proc/self/fd", "/dev/fd"):
        try:
            fds = [int(name) for name in os.listdir(listing) if name.isdigit()]
        except OSError:
            continue
        for fd in fds:
            if fd > 2 and fd not in keep:
                try:
                    os.close(fd)
                except OSError:
                    pass  # the listing's own descriptor, closed already
        return
    low = 3
    for fd in sorted(k for k in keep if k >= 3):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, 65536)
