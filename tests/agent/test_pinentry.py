"""Approval through a real pinentry (Debian's pinentry-tty) on a pty the test reads as the
user would: the agent asks there, not the program that wants the key."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator

import pytest

from client import errors
from support import PASSPHRASE, AgentProcess, short_tmpdir
from support.terminal import Terminal

PINENTRY = shutil.which("pinentry-tty")
pytestmark = pytest.mark.skipif(PINENTRY is None, reason="pinentry-tty is not installed (scripts/test.sh installs it)")


def users_terminal(a: AgentProcess) -> Terminal:
    """The terminal where the user answers: `agent approve --here` names it (it must be the
    caller's controlling terminal), and it stays open (a shell would; here a sleep)."""
    command = " ".join(shlex.quote(part) for part in a.command("approve", "--here"))
    t = Terminal(["/bin/bash", "--norc", "-c", f"{command} && exec sleep 300"], a.env)
    t.expect(f"through {PINENTRY}")
    return t


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
    tty = users_terminal(a)
    try:
        out: list[object] = []
        reader = threading.Thread(target=_read, args=(a, out))
        reader.start()
        shown = tty.expect("Passphrase or PIN:")
        assert "Read openai/api-key for process" in shown and "python" in shown
        tty.send("not the passphrase\r")
        assert "not the vault's passphrase or approval PIN" in tty.expect("Passphrase or PIN:")
        tty.send(PASSPHRASE + "\r")
        reader.join(30)
        assert out == ["sk-approved-through-pinentry"]
        with a.client() as c:
            assert c.get("openai") == "sk-approved-through-pinentry"  # remembered for this process
        assert PASSPHRASE not in a.log()
    finally:
        tty.kill()


def test_no_answer_at_the_pinentry_is_a_denial_and_the_pinentry_goes(agent_with_pinentry: AgentProcess) -> None:
    a = agent_with_pinentry
    tty = users_terminal(a)
    try:
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
        tty.kill()


def test_approve_here_takes_only_the_callers_own_terminal(agent_with_pinentry: AgentProcess) -> None:
    master, slave = os.openpty()  # a pty of this user, but not this process's controlling terminal
    try:
        with agent_with_pinentry.client() as c:
            for bad in ("/etc/passwd", "/dev/null-not-there", "relative/tty", "/dev/pts/0\x00x", os.ttyname(slave)):
                with pytest.raises(errors.BadRequest):
                    c.approve_here(bad)
    finally:
        os.close(master)
        os.close(slave)
