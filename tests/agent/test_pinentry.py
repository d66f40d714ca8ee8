"""Approval through a real pinentry (Debian's pinentry-tty) on a pty the test reads as the
user would: the agent asks there, not the program that wants the key."""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator

import pytest

from client import errors
from support import PASSPHRASE, AgentProcess, short_tmpdir

PINENTRY = shutil.which("pinentry-tty")
pytestmark = pytest.mark.skipif(PINENTRY is None, reason="pinentry-tty is not installed (scripts/test.sh installs it)")


class Pty:
    """The user's terminal: the agent's pinentry writes to it, the test types into it."""

    def __init__(self) -> None:
        self.master, self.slave = os.openpty()
        self.name = os.ttyname(self.slave)
        self.seen = b""

    def expect(self, text: str, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        while text.encode() not in self.seen:
            left = deadline - time.monotonic()
            assert left > 0, f"{text!r} never appeared on the terminal; it shows {self.seen!r}"
            ready, _, _ = select.select([self.master], [], [], left)
            if ready:
                self.seen += os.read(self.master, 4096)
        shown, self.seen = self.seen.decode(errors="replace"), b""
        return shown

    def type(self, line: str) -> None:
        os.write(self.master, line.encode() + b"\n")

    def close(self) -> None:
        os.close(self.master)
        os.close(self.slave)


@pytest.fixture
def agent_with_pinentry() -> Iterator[AgentProcess]:
    home = short_tmpdir()
    (home / "config" / "credential-agent").mkdir(parents=True)
    (home / "config" / "credential-agent" / "config.toml").write_text(
        f'pinentry = "{PINENTRY}"\nconfirm_timeout = 10\n[access."openai"]\nrule = "confirm"\n')
    a = AgentProcess(home=home).start()
    a.init_passphrase()
    with a.client() as c:
        c.store("openai", "sk-approved-through-pinentry", validate=False)
    yield a
    a.cleanup()


def _read(a: AgentProcess, out: list[object]) -> None:
    try:
        with a.client(timeout=30) as c:
            out.append(c.get("openai"))
    except errors.AgentError as e:
        out.append(e)


def pinentries() -> list[str]:
    found = subprocess.run(["pgrep", "-f", "pinentry-tty"], capture_output=True, text=True).stdout.split()
    return [p for p in found if int(p) != os.getpid()]


def test_the_pinentry_asks_on_the_users_terminal_and_a_wrong_secret_is_asked_again(
    agent_with_pinentry: AgentProcess,
) -> None:
    a = agent_with_pinentry
    tty = Pty()
    try:
        with a.client() as c:
            assert c.approve_here(tty.name) == {"tty": tty.name, "pinentry": PINENTRY}
        out: list[object] = []
        reader = threading.Thread(target=_read, args=(a, out))
        reader.start()
        shown = tty.expect("Passphrase or PIN:")
        assert "asks for openai/api-key" in shown and "python" in shown
        tty.type("not the passphrase")
        assert "not the vault's passphrase or approval PIN" in tty.expect("Passphrase or PIN:")
        tty.type(PASSPHRASE)
        reader.join(30)
        assert out == ["sk-approved-through-pinentry"]
        with a.client() as c:
            assert c.get("openai") == "sk-approved-through-pinentry"  # remembered for this process
        assert PASSPHRASE not in a.log()
    finally:
        tty.close()


def test_no_answer_at_the_pinentry_is_a_denial_and_the_pinentry_goes(agent_with_pinentry: AgentProcess) -> None:
    a = agent_with_pinentry
    tty = Pty()
    try:
        with a.client() as c:
            c.approve_here(tty.name)
        out: list[object] = []
        reader = threading.Thread(target=_read, args=(a, out))
        reader.start()
        tty.expect("Passphrase or PIN:")
        assert pinentries()  # it is asking
        reader.join(30)
        assert isinstance(out[0], errors.Denied)
        deadline = time.monotonic() + 10
        while pinentries() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert pinentries() == []
    finally:
        tty.close()


def test_approve_here_takes_only_a_terminal_of_this_user(agent_with_pinentry: AgentProcess) -> None:
    with agent_with_pinentry.client() as c:
        for bad in ("/etc/passwd", "/dev/null-not-there", "relative/tty"):
            with pytest.raises(errors.BadRequest):
                c.approve_here(bad)
