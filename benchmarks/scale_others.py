"""The Secret Service (gnome-keyring) and ``pass`` holding N secrets: the columns
``scale.py`` prints beside the agent's.

Each side stores N secrets, then is asked for 20 random ones, one process each
(``secret-tool lookup``; ``pass show``), lists them all (``secret-tool search --all``;
``pass ls``) and has its daemon's RSS read (gnome-keyring-daemon's; pass has no daemon:
gpg decrypts in each process, with gpg-agent holding the key). Storing is done the way a
program imports into each: the Secret Service through SecretStorage, one D-Bus
connection, ``create_item(..., replace=True)`` per secret (what ``secret-tool store``
does: an existing item of the same attributes is replaced); pass by ``pass insert -m -f``
per secret (pass has no batch insert; its import extensions loop the same way).

Every step stops at ``limit`` seconds: its cell then says "did not finish in 120 s,
after K items" (the Secret Service took 12 s per store at 5,700 items on this machine,
and never reached 10,000 in 40 minutes). A side that stored fewer than N is looked up
and listed at what it holds, and says so.

Needs: dbus-daemon, gnome-keyring and libsecret-tools (``secret-tool``) for the Secret
Service, SecretStorage in the venv (a dependency of keyring); ``pass`` and gnupg
(``apt-get install pass``). A side whose tools are missing is skipped, with the reason.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import subprocess
import time
from collections.abc import Iterator, Sequence

from support import SecretService, SecretServiceUnavailable, short_tmpdir

SERVICE = "credential-agent-scale"
LOOKUPS = 20  # processes per lookup measurement


class Unavailable(Exception):
    """A side that cannot run here: the reason replaces its column."""


class Side:
    """One of the others, holding up to ``n`` secrets, and what was measured of it."""

    label = ""

    def __init__(self, n: int, limit: float) -> None:
        self.n = n
        self.limit = limit
        self.stored = 0
        self.results: dict[str, float | list[float] | str] = {}

    # what each side supplies
    def env(self) -> dict[str, str]:
        raise NotImplementedError

    def store(self, pairs: Iterator[tuple[str, str]], deadline: float) -> None:
        raise NotImplementedError

    def lookup_command(self, name: str) -> list[str]:
        raise NotImplementedError

    def list_command(self) -> list[str]:
        raise NotImplementedError

    def daemon_rss_mib(self) -> float | str:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    # the steps
    def fill(self, names: Sequence[str], values: Sequence[str]) -> None:
        start = time.perf_counter()
        deadline = start + self.limit
        try:
            self.store(iter(zip(names, values, strict=True)), deadline)
        except subprocess.TimeoutExpired:
            pass
        elapsed = time.perf_counter() - start
        if self.stored < len(names):
            self.results["store"] = f"did not finish in {self.limit:g} s, after {self.stored:,} items"
        else:
            self.results["store"] = elapsed

    def held(self) -> str:
        return "" if self.stored >= self.n else f" (of {self.stored:,} held)"

    def run(self, command: list[str], deadline: float) -> float:
        start = time.perf_counter()
        done = subprocess.run(command, env=self.env(), stdin=subprocess.DEVNULL, capture_output=True,
                              timeout=max(0.1, deadline - start))
        if done.returncode != 0:
            why = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or [f"exit {done.returncode}"]
            raise RuntimeError(why[0][:60])
        return time.perf_counter() - start

    def lookups(self, names: Sequence[str], rng: random.Random) -> None:
        if not self.stored:
            return
        picks = [rng.choice(names[: self.stored]) for _ in range(LOOKUPS)]
        deadline = time.perf_counter() + self.limit
        samples: list[float] = []
        try:
            for name in picks:
                samples.append(self.run(self.lookup_command(name), deadline))
        except subprocess.TimeoutExpired:
            self.results["lookup"] = f"did not finish in {self.limit:g} s, after {len(samples)} lookups"
            return
        except RuntimeError as e:
            self.results["lookup"] = f"failed: {e}"
            return
        self.results["lookup"] = samples

    def listing(self) -> None:
        if not self.stored:
            return
        try:
            self.results["list"] = self.run(self.list_command(), time.perf_counter() + self.limit)
        except subprocess.TimeoutExpired:
            self.results["list"] = f"did not finish in {self.limit:g} s"
        except RuntimeError as e:
            self.results["list"] = f"failed: {e}"

    def memory(self) -> None:
        self.results["daemon RSS"] = self.daemon_rss_mib()


def _rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


@contextlib.contextmanager
def _environ(extra: dict[str, str]) -> Iterator[None]:
    """``os.environ`` with ``extra`` while inside (SecretStorage finds the bus there)."""
    saved = {k: os.environ.get(k) for k in extra}
    os.environ.update(extra)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class SecretServiceSide(Side):
    label = "Secret Service"

    def __init__(self, n: int, limit: float) -> None:
        super().__init__(n, limit)
        if shutil.which("secret-tool") is None:
            raise Unavailable("secret-tool is not installed (Debian: libsecret-tools)")
        try:
            import secretstorage  # noqa: F401
        except ImportError as e:
            raise Unavailable("SecretStorage is not installed in this venv (pip install SecretStorage)") from e
        try:
            self.ss = SecretService().start()
        except SecretServiceUnavailable as e:
            raise Unavailable(str(e)) from e

    def env(self) -> dict[str, str]:
        return {**os.environ, **self.ss.env}

    def store(self, pairs: Iterator[tuple[str, str]], deadline: float) -> None:
        import secretstorage

        with _environ({"DBUS_SESSION_BUS_ADDRESS": self.ss.env["DBUS_SESSION_BUS_ADDRESS"]}):
            connection = secretstorage.dbus_init()
        try:
            collection = secretstorage.get_default_collection(connection)
            for name, value in pairs:
                if time.perf_counter() > deadline:
                    return
                collection.create_item(name, {"service": SERVICE, "user": name}, value.encode(), replace=True)
                self.stored += 1
        finally:
            connection.close()

    def lookup_command(self, name: str) -> list[str]:
        return ["secret-tool", "lookup", "service", SERVICE, "user", name]

    def list_command(self) -> list[str]:
        return ["secret-tool", "search", "--all", "service", SERVICE]

    def daemon_rss_mib(self) -> float | str:
        assert self.ss.gkd_pid is not None
        return _rss_mib(self.ss.gkd_pid)

    def close(self) -> None:
        self.ss.stop()


class PassSide(Side):
    label = "pass"

    def __init__(self, n: int, limit: float) -> None:
        super().__init__(n, limit)
        for tool in ("pass", "gpg", "gpgconf"):
            if shutil.which(tool) is None:
                raise Unavailable(f"{tool} is not installed (Debian: apt-get install pass)")
        self.home = short_tmpdir("pass-")  # short: gpg-agent's socket lives in GNUPGHOME
        (self.home / "g").mkdir(mode=0o700)
        try:
            # a key without a passphrase: nothing asks, as a logged-in user's agent would not
            gpg = ["gpg", "--batch", "--pinentry-mode", "loopback", "--passphrase", ""]
            self.quiet([*gpg, "--quick-gen-key", "scale bench <bench@example.invalid>", "future-default", "default",
                        "never"])
            listed = self.quiet(["gpg", "--batch", "--with-colons", "--list-secret-keys"])
            fingerprint = next(line.split(":")[9] for line in listed.splitlines() if line.startswith("fpr:"))
            self.quiet(["pass", "init", fingerprint])
        except (subprocess.SubprocessError, StopIteration) as e:
            self.close()
            raise Unavailable(f"could not make a GPG key and a password store: {e}") from e

    def quiet(self, command: list[str]) -> str:
        return subprocess.run(command, env=self.env(), stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              check=True, timeout=120).stdout

    def env(self) -> dict[str, str]:
        return {**os.environ, "GNUPGHOME": str(self.home / "g"), "PASSWORD_STORE_DIR": str(self.home / "store")}

    def store(self, pairs: Iterator[tuple[str, str]], deadline: float) -> None:
        env = self.env()
        for name, value in pairs:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                return
            subprocess.run(["pass", "insert", "-m", "-f", name], input=value + "\n", text=True, env=env,
                           capture_output=True, check=True, timeout=remaining)
            self.stored += 1

    def lookup_command(self, name: str) -> list[str]:
        return ["pass", "show", name]

    def list_command(self) -> list[str]:
        return ["pass", "ls"]

    def daemon_rss_mib(self) -> float | str:
        return "no daemon"

    def close(self) -> None:
        subprocess.run(["gpgconf", "--kill", "gpg-agent"], env=self.env(), capture_output=True, timeout=30)
        shutil.rmtree(self.home, ignore_errors=True)


SIDES: tuple[type[Side], ...] = (SecretServiceSide, PassSide)


def start(kind: type[Side], n: int, limit: float) -> Side | str:
    """A side holding nothing yet, or why it cannot run here."""
    try:
        return kind(n, limit)
    except Unavailable as e:
        return f"skipped: {e}"
