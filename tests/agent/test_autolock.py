"""Auto-lock against real agents: a sliding idle timeout and a maximum unlocked lifetime.

Timeouts are short, margins generous: the machine may be busy.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from client import errors
from support import PASSPHRASE, AgentProcess

VALUE = "rp_" + "k" * 30


@pytest.fixture
def make_agent() -> Iterator:
    started: list[AgentProcess] = []

    def make(*args: str, env: dict[str, str] | None = None, config: str | None = None) -> AgentProcess:
        a = AgentProcess(env=env)
        if config is not None:
            path = a.home / "config" / "credential-agent" / "config.toml"
            path.parent.mkdir(parents=True)
            path.write_text(config)
        started.append(a)
        return a.start(*args)

    yield make
    for a in started:
        a.cleanup()


def status(a: AgentProcess) -> dict:
    done = a.cli("status", "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def wait_locked(a: AgentProcess, within: float) -> float:
    """Poll `status` (which must not reset the idle timer) until locked; the time it took."""
    t0 = time.monotonic()
    with a.client() as c:
        while time.monotonic() - t0 < within:
            if c.status()["locked"]:
                return time.monotonic() - t0
            time.sleep(0.05)
    raise AssertionError(f"still unlocked after {within} s")


def test_idle_timeout_slides_with_use_not_with_status(make_agent) -> None:
    a = make_agent("--idle-timeout", "3")
    a.init_passphrase()
    with a.client() as c:
        c.store("runpod", VALUE)
        # used every 0.5 s for 5 s: longer than the timeout, so only a sliding timer survives it
        t0 = time.monotonic()
        while True:
            last_use = time.monotonic()
            assert c.get("runpod") == VALUE
            if last_use - t0 > 5.0:
                break
            time.sleep(0.5)
        st = c.status()
        assert st["locked"] is False
        assert 0 < st["idle_left_s"] <= 3
    wait_locked(a, within=3 + 10)  # only status calls from here on
    assert time.monotonic() - last_use >= 2.9  # not locked early
    with a.client() as c:
        with pytest.raises(errors.Locked):
            c.get("runpod")
    assert "auto-lock timer" in a.log()


def test_max_unlocked_locks_whatever_the_use(make_agent) -> None:
    a = make_agent("--max-unlocked", "2")
    a.init_passphrase()
    t0 = time.monotonic()
    with a.client() as c:
        c.store("runpod", VALUE)
        first = c.status()
        assert first["max_unlocked"] == 2 and 0 < first["unlocked_left_s"] <= 2
        assert first["idle_timeout"] == 0 and first["idle_left_s"] is None
        with pytest.raises(errors.Locked):
            while time.monotonic() - t0 < 2 + 10:
                c.get("runpod")  # constant use does not extend it
                time.sleep(0.05)
    assert time.monotonic() - t0 >= 1.9
    # unlocking again starts a new lifetime
    with a.client() as c:
        c.unlock(PASSPHRASE)
        assert c.get("runpod") == VALUE
        assert c.status()["unlocked_left_s"] > 1


def test_zero_is_off_and_status_shows_both(make_agent) -> None:
    a = make_agent("--idle-timeout", "0", "--max-unlocked", "0")
    a.init_passphrase()
    st = status(a)
    assert (st["idle_timeout"], st["max_unlocked"], st["idle_left_s"], st["unlocked_left_s"]) == (0, 0, None, None)
    assert st["locked"] is False
    assert "auto-lock:   off" in a.cli("status").stdout


def test_status_shows_seconds_left(make_agent) -> None:
    a = make_agent("--idle-timeout", "600", "--max-unlocked", "900")
    st = status(a)
    assert st["idle_left_s"] is None  # locked: nothing counts down
    a.init_passphrase()
    st = status(a)
    assert 590 < st["idle_left_s"] <= 600 and 890 < st["unlocked_left_s"] <= 900
    text = a.cli("status").stdout
    assert "idle 600 s" in text and "max 900 s" in text and "s left" in text


def test_config_file_env_and_flags_in_order(make_agent) -> None:
    config = "idle_timeout = 70\nmax_unlocked = 90.5\n"
    st = status(make_agent(config=config))
    assert (st["idle_timeout"], st["max_unlocked"]) == (70, 90.5)
    st = status(make_agent(config=config, env={"CREDENTIAL_AGENT_IDLE_TIMEOUT": "50"}))
    assert (st["idle_timeout"], st["max_unlocked"]) == (50, 90.5)
    st = status(make_agent("--idle-timeout", "40", config=config, env={"CREDENTIAL_AGENT_IDLE_TIMEOUT": "50"}))
    assert (st["idle_timeout"], st["max_unlocked"]) == (40, 90.5)


def test_idle_timer_from_the_config_file_locks(make_agent) -> None:
    a = make_agent(config="idle_timeout = 1\n")
    a.init_passphrase()
    wait_locked(a, within=1 + 10)
