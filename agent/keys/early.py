"""A keystore vault's master key, read by a helper process while a new agent loads.

An agent started for a request that needs its key (a client's first ``get`` starts it)
would load its own code, serve, and only then load keyring and ask the keystore: two
long steps, one after the other, on one CPU. Started with ``start``, a helper forked
before the agent loads anything reads the vault's meta and the keystore entry it names
while the agent loads on another CPU, and hands the result over a pipe; once serving,
the agent unlocks with it (``LockState.warm``), as it would have for that first request.

Rules of this module:
- there is a helper only where the agent may use two CPUs (``cpus``): on one, the two
  would take turns, and the helper's imports would only add to the agent's;
- and only in the agent that holds the vault's lock (``hold``, taken before the fork and
  handed to ``transport.unix.single_instance``): of several agents started at once, the
  one that will serve; the others read nothing, so the keystore is read, and may
  prompt, once;
- ``start`` runs in the new agent before its own imports, after its hardening (no core
  dumps, no same-user ptrace: both inherited by the helper), so that the fork is cheap,
  the helper pays for keyring, never for asyncio, and no SQLite connection of the agent's
  crosses the fork (SQLite's own state must not);
- the helper keeps no descriptor of the agent's but stdio (its log); it opens the vault
  read-only, asks nothing of a vault that is not a keystore vault, writes one message
  and leaves with ``os._exit``; what the keystore answered it passes on, a refusal
  included (its error's code and message, which never hold a key: a prompt the user
  dismissed is not shown twice), and whatever it failed at before it reached the
  keystore it says as "failed", and the agent reads the keystore itself;
- the key crosses that pipe alone: no file, argument, log line or message holds it;
- the helper is claimed once (``claim``) and read within the keystore deadline; one
  nobody claims is killed and its message dropped (``drop``), as is one that does not
  answer in time (``Helper.kill``); none is signalled once reaped (its pid may be another's).
"""

from __future__ import annotations

import os
import signal
import sys
import threading

from client import errors

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Final

__all__ = ["start", "claim", "drop", "hold", "held", "cpus", "Helper"]

# the helper's messages: the first byte says which
_KEY: Final = b"K"  # then the entry's name, NUL, the key
_MISSING: Final = b"N"  # then the entry's name: the keystore has no such entry
_REFUSED: Final = b"X"  # then the error's code, NUL, its message: what the keystore said
_NOT_KEYSTORE: Final = b"-"  # no vault there, or not a keystore vault
_FAILED: Final = b"E"
_MAX_MESSAGE: Final = 4096  # an entry's name (at most ~90 bytes) and a 44-byte key, or an error


class Helper:
    """A started helper: its process and the pipe it answers on."""

    def __init__(self, pid: int, fd: int) -> None:
        self.pid = pid
        self.fd = fd
        self._reaped = False
        self._reaping = threading.Lock()  # no kill once reaped: the pid may be another process's

    def __repr__(self) -> str:
        return f"Helper(pid={self.pid})"

    def wait(self) -> tuple[str, bytes | None] | errors.AgentError | None:
        """Block until the helper answers: the entry it read and its key (None: no such
        entry), the keystore's refusal, or None when it read nothing usable. Reaps it;
        call once."""
        chunks: list[bytes] = []
        try:
            while chunk := os.read(self.fd, _MAX_MESSAGE):
                chunks.append(chunk)
        finally:
            os.close(self.fd)
            self._reap()
        message = b"".join(chunks)
        kind, body = message[:1], message[1:]
        first, _, rest = body.partition(b"\0")
        if kind == _KEY and rest:
            return first.decode("ascii", "replace"), rest
        if kind == _MISSING:
            return first.decode("ascii", "replace"), None
        if kind == _REFUSED:
            return errors.from_wire(first.decode("ascii", "replace"), rest.decode("utf-8", "replace"))
        return None

    def kill(self) -> None:
        """Stop a helper that did not answer in time (``wait`` then sees the pipe end)."""
        if sys.platform == "win32":  # no helper there (``start``)
            return
        with self._reaping:
            if not self._reaped:
                os.kill(self.pid, signal.SIGKILL)

    def discard(self) -> None:
        """Instead of ``wait``: stop the helper and drop its message unread; it is reaped
        in a thread (one stuck in the kernel dies only when it leaves it)."""
        self.kill()
        os.close(self.fd)
        threading.Thread(target=self._reap, name="early-reap", daemon=True).start()

    def _reap(self) -> None:
        with self._reaping:
            try:
                os.waitpid(self.pid, 0)
            except ChildProcessError:
                pass
            self._reaped = True


_pending: Helper | None = None
_held: tuple[Path, int] | None = None


def hold(lock: Path) -> bool:
    """Take the vault's lock (``client.paths.lock_path``) for this agent, now, before its
    imports: whether it did (False: another agent holds it, or it cannot be taken here,
    and ``transport.unix.single_instance`` will say which). ``held`` hands it on."""
    global _held
    if sys.platform == "win32":  # no helper there (``start``), and no flock
        return False
    import fcntl
    import stat

    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError:
        return False
    try:
        st = os.fstat(fd)
        if st.st_uid != os.getuid() or not stat.S_ISREG(st.st_mode):
            raise OSError("not a regular file of this user")
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return False
    _held = (lock, fd)
    return True


def held(lock: Path) -> int | None:
    """The descriptor ``hold`` locked ``lock`` with, now the caller's; None if it did not."""
    global _held
    if _held is None or _held[0] != lock:
        return None
    fd = _held[1]
    _held = None
    return fd


def start(vault: Path) -> None:
    """Fork the helper that reads the key of the vault at ``vault``: see the module's rules.
    Not where this process has one CPU (there the helper's imports would only take turns
    with the agent's, and the agent reads the key itself once it serves, as fast), nor
    where it does not hold the vault's lock (``hold``)."""
    global _pending
    if sys.platform == "win32" or _pending is not None or _held is None or cpus() < 2:
        return
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the helper: it keeps its pipe and stdio (the log), none of the agent's descriptors
        from agent import hardening

        hardening.close_inherited(keep=(write_end,))
        try:
            message = _read(vault)
        except BaseException:  # noqa: BLE001 - said as "failed"; the agent reads the keystore itself
            message = _FAILED
        try:
            os.write(write_end, message)  # far under PIPE_BUF: one write, whole or not at all
        finally:
            os._exit(0)
    os.close(write_end)
    _pending = Helper(pid, read_end)


def cpus() -> float:
    """The CPUs this process may run on: its affinity (Linux), less where its cgroup's
    quota, as a container sees it at /sys/fs/cgroup, allows fewer (``--cpus 1``)."""
    count: float = os.cpu_count() or 1
    if sys.platform.startswith("linux"):
        try:
            count = len(os.sched_getaffinity(0))
        except OSError:
            pass
    for path in ("/sys/fs/cgroup/cpu.max", "/sys/fs/cgroup/cpu/cpu.cfs_quota_us"):
        try:
            with open(path) as f:
                quota = f.read().split()
            if path.endswith("cpu.max"):  # cgroup v2: "QUOTA PERIOD", or "max PERIOD"
                limit, period = quota[0], quota[1]
            else:  # cgroup v1: the quota here, its period beside it (-1: none)
                with open("/sys/fs/cgroup/cpu/cpu.cfs_period_us") as f:
                    limit, period = quota[0], f.read().strip()
            if limit not in ("max", "-1") and int(period) > 0:
                count = min(count, int(limit) / int(period))
        except (OSError, IndexError, ValueError):
            continue
        break
    return count


def claim() -> Helper | None:
    """The started helper, now the caller's to ``wait`` for (once); None if there is none."""
    global _pending
    helper, _pending = _pending, None
    return helper


def drop() -> None:
    """Kill a helper nobody claimed and drop its message, if there is one."""
    helper = claim()
    if helper is not None:
        helper.discard()


def _read(vault: Path) -> bytes:
    """In the helper: the message for the vault at ``vault``."""
    import sqlite3

    try:
        # read-only: a vault that is not there is not made here
        db = sqlite3.connect(f"{vault.absolute().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error:
        return _NOT_KEYSTORE
    try:
        meta = {str(k): bytes(v) for k, v in db.execute("SELECT key, value FROM meta")}
    except sqlite3.Error:
        return _NOT_KEYSTORE  # not initialised yet
    finally:
        db.close()
    if meta.get("key_source") != b"keyring":
        return _NOT_KEYSTORE
    from agent.keys import keystore

    entry = keystore.account(meta.get)
    known = meta.get(keystore.KNOWN_BACKEND)
    try:
        key = keystore.read(entry, known.decode("ascii", "replace") if known else None)
    except BaseException as e:  # noqa: BLE001 - the keystore's answer, passed on as the agent would say it
        refusal = e if isinstance(e, errors.AgentError) else keystore.translate(e)
        said = refusal.message.encode("utf-8", "replace")[:2048]
        return _REFUSED + refusal.code.encode("ascii") + b"\0" + said
    if key is None:
        return _MISSING + entry.encode("ascii")
    return _KEY + entry.encode("ascii") + b"\0" + key
