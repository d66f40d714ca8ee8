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
- ``start`` runs in the new agent before its own imports, after its hardening (no core
  dumps, no same-user ptrace: both inherited by the helper), so that the fork is cheap,
  the helper pays for keyring, never for asyncio, and no SQLite connection of the agent's
  crosses the fork (SQLite's own state must not);
- the helper keeps no descriptor of the agent's but stdio (its log); it reads nothing
  where an agent already holds the vault or another helper is reading (``alone``); it
  opens the vault read-only, asks nothing of a vault that is not a keystore vault, writes one message and
  leaves with ``os._exit``; whatever it fails at it says as "failed", never why, and the
  agent then reads the keystore itself, so a failure is reported as it always is;
- the key crosses that pipe alone: no file, argument, log line or message holds it;
- the helper is claimed once (``claim``) and read within the keystore deadline; one
  nobody claims is killed and its message dropped (``drop``), as is one that does not
  answer in time (``Helper.kill``).
"""

from __future__ import annotations

import os
import signal
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Final

__all__ = ["start", "claim", "drop", "alone", "cpus", "Helper"]

# the helper's messages: the first byte says which
_KEY: Final = b"K"  # then the entry's name, NUL, the key
_MISSING: Final = b"N"  # then the entry's name: the keystore has no such entry
_NOT_KEYSTORE: Final = b"-"  # no vault there, or not a keystore vault
_FAILED: Final = b"E"
_MAX_MESSAGE: Final = 4096  # an entry's name (at most ~90 bytes) and a 44-byte key


class Helper:
    """A started helper: its process and the pipe it answers on."""

    def __init__(self, pid: int, fd: int) -> None:
        self.pid = pid
        self.fd = fd

    def __repr__(self) -> str:
        return f"Helper(pid={self.pid})"

    def wait(self) -> tuple[str, bytes | None] | None:
        """Block until the helper answers: the entry it read and its key (None: no such
        entry), or None when it read nothing usable. Reaps it; call once."""
        chunks: list[bytes] = []
        try:
            while chunk := os.read(self.fd, _MAX_MESSAGE):
                chunks.append(chunk)
        finally:
            os.close(self.fd)
            _reap(self.pid)
        message = b"".join(chunks)
        kind, body = message[:1], message[1:]
        entry, _, key = body.partition(b"\0")
        if kind == _KEY and key:
            return entry.decode("ascii", "replace"), key
        if kind == _MISSING:
            return entry.decode("ascii", "replace"), None
        return None

    def kill(self) -> None:
        """Stop a helper that did not answer in time (``wait`` then sees the pipe end)."""
        try:
            os.kill(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass  # already gone (and reaped by wait)

    def discard(self) -> None:
        """Instead of ``wait``: stop the helper and drop its message unread."""
        self.kill()
        os.close(self.fd)
        _reap(self.pid)


_pending: Helper | None = None


def start(vault: Path, lock: Path) -> None:
    """Fork the helper that reads the key of the vault at ``vault``, whose agents hold
    ``lock`` (``client.paths.lock_path``): see the module's rules. Not where this process
    has one CPU: there the helper's imports would only take turns with the agent's, and
    the agent reads the key itself once it serves, as fast."""
    global _pending
    if sys.platform == "win32" or _pending is not None or cpus() < 2:
        return
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the helper: it keeps its pipe and stdio (the log), none of the agent's descriptors
        os.closerange(3, write_end)
        os.closerange(write_end + 1, _max_fd())
        try:
            message = _read(vault) if alone(lock) else _NOT_KEYSTORE
        except BaseException:  # noqa: BLE001 - said as "failed"; the agent reads the keystore itself
            message = _FAILED
        try:
            os.write(write_end, message)  # far under PIPE_BUF: one write, whole or not at all
        finally:
            os._exit(0)
    os.close(write_end)
    _pending = Helper(pid, read_end)


def cpus() -> float:
    """The CPUs this process may run on: its affinity (Linux), less where a cgroup's quota
    allows fewer (a container started with ``--cpus 1``)."""
    try:
        count: float = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        count = os.cpu_count() or 1
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


def _max_fd() -> int:
    try:
        return max(os.sysconf("SC_OPEN_MAX"), 256)
    except (OSError, ValueError):
        return 4096


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def alone(lock: Path) -> bool:
    """Whether this helper may read the key: no agent holds the vault's ``lock`` (one that
    serves read its key itself) and no other helper reads it now, which it then holds off
    until it exits (``agent.early.lock`` beside ``lock``). Several first uses at once start
    several agents, of which one serves: the keystore is read, and may prompt, once."""
    import fcntl

    flags = os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        held = os.open(lock, os.O_RDONLY | flags)
    except FileNotFoundError:
        pass  # no agent ever ran on this vault
    else:
        try:
            fcntl.flock(held, fcntl.LOCK_SH | fcntl.LOCK_NB)  # released at once: our agent takes it next
        except BlockingIOError:
            return False
        finally:
            os.close(held)
    mine = os.open(lock.with_name("agent.early.lock"), os.O_RDWR | os.O_CREAT | flags, 0o600)
    try:
        fcntl.flock(mine, fcntl.LOCK_EX | fcntl.LOCK_NB)  # kept (never closed) until the helper exits
    except BlockingIOError:
        os.close(mine)
        return False
    return True


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
    key = keystore.read(entry, known.decode("ascii", "replace") if known else None)
    if key is None:
        return _MISSING + entry.encode("ascii")
    return _KEY + entry.encode("ascii") + b"\0" + key
