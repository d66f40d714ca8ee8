"""The clients never hand one request's reply to another: exchanges cut short
(cancelled, interrupted) drop their connection, a forked child never shares its
parent's connection, and a failed exchange is resent only when that is safe.
All against real `agent serve` processes."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator

import pytest

from client import AsyncClient, Client, errors, protocol
from support import AgentProcess

RUNPOD = "RUNPOD-SECRET-" + "r" * 20
WANDB = "W" * 40


@pytest.fixture
def two_keys(unlocked_agent: AgentProcess) -> AgentProcess:
    with unlocked_agent.client(timeout=30) as c:
        c.store("runpod", RUNPOD)
        c.store("wandb", WANDB)
    return unlocked_agent


class Interrupt(BaseException):
    """Raised from a signal handler, as KeyboardInterrupt is on Ctrl-C."""


@pytest.fixture
def alarm() -> Iterator[None]:
    def fire(signum: int, frame: object) -> None:
        raise Interrupt()

    old = signal.signal(signal.SIGALRM, fire)
    yield
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, old)


# --- cut-short exchanges -----------------------------------------------------------

async def test_cancelled_async_get_does_not_answer_the_next_call(two_keys: AgentProcess) -> None:
    async with AsyncClient(two_keys.socket, autostart=False) as c:
        await c.hello()
        for _ in range(20):
            task = asyncio.create_task(c.get("runpod"))
            await asyncio.sleep(0)  # the request is written, its reply not yet read
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert await c.get("wandb") == WANDB
            assert await c.get("wandb") == WANDB


async def test_wait_for_timeout_drops_the_connection(two_keys: AgentProcess) -> None:
    async with AsyncClient(two_keys.socket, autostart=False) as c:
        await c.hello()
        with pytest.raises(TimeoutError):
            # a wrong passphrase costs scrypt: far longer than the 10 ms allowed
            await asyncio.wait_for(
                c.call_many([("rotate_key", {"passphrase": "wrong"}), ("get", {"platform": "runpod"})]), 0.01
            )
        assert await c.get("wandb") == WANDB
        assert await c.get("wandb") == WANDB


def test_interrupted_sync_exchange_does_not_answer_the_next_call(two_keys: AgentProcess, alarm: None) -> None:
    with two_keys.client(timeout=30) as c:
        c.hello()
        signal.setitimer(signal.ITIMER_REAL, 0.02)
        with pytest.raises(Interrupt):
            # scrypt for the wrong passphrase keeps the agent busy past the alarm;
            # the replies behind it would answer whatever this client asks next
            c.call_many([("rotate_key", {"passphrase": "wrong"}), ("get", {"platform": "runpod"})])
        assert c.get("wandb") == WANDB
        assert c.get("wandb") == WANDB


# --- fork ------------------------------------------------------------------------

def _wait_child(pid: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return -999


def test_forked_child_never_shares_the_parents_connection(two_keys: AgentProcess) -> None:
    c = two_keys.client(timeout=5)
    c.hello()  # connected before the fork, as before a DataLoader starts its workers
    for _ in range(30):
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                for _ in range(20):
                    if c.get("wandb") != WANDB:
                        code = 3
            except BaseException:
                code = 4
            os._exit(code)
        wrong = [v for v in (c.get("runpod") for _ in range(20)) if v != RUNPOD]
        assert _wait_child(pid, 30) == 0, "the child got another reply or failed"
        assert not wrong
    c.close()


def test_forked_child_of_an_async_client_uses_its_own_connection(two_keys: AgentProcess) -> None:
    c = AsyncClient(two_keys.socket, autostart=False, timeout=5)
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(c.hello())

        async def gets(name: str) -> list[str]:
            return [await c.get(name) for _ in range(20)]

        for _ in range(10):
            pid = os.fork()
            if pid == 0:
                code = 0
                try:
                    child_loop = asyncio.new_event_loop()
                    if child_loop.run_until_complete(gets("wandb")) != [WANDB] * 20:
                        code = 3
                except BaseException:
                    code = 4
                os._exit(code)
            assert loop.run_until_complete(gets("runpod")) == [RUNPOD] * 20
            assert _wait_child(pid, 30) == 0, "the child got another reply or failed"
        loop.run_until_complete(c.aclose())
    finally:
        loop.close()


# --- when to resend ----------------------------------------------------------------

def test_retry_decision() -> None:
    # never sent: any op may go again, on a new connection
    assert protocol.retry_allowed(["delete"], sent=False)
    assert protocol.retry_allowed(["rotate_key", "stop"], sent=False)
    # sent, and the connection died before a reply: only when every op is safe to repeat
    assert protocol.retry_allowed(["get"], sent=True)
    assert protocol.retry_allowed(["get", "list", "store", "unlock"], sent=True)
    for op in ("delete", "init", "rotate_key", "stop"):
        assert not protocol.retry_allowed([op], sent=True), op
        assert not protocol.retry_allowed(["get", op], sent=True), op
    assert protocol.RETRY_SAFE <= set(protocol.OPS)
    assert protocol.SLOW_OPS <= set(protocol.OPS)


@pytest.fixture
def quick_idle_agent() -> Iterator[AgentProcess]:
    a = AgentProcess(env={"CREDENTIAL_AGENT_CONNECTION_IDLE_TIMEOUT": "0.3"}).start()
    a.init_passphrase()
    with a.client(timeout=30) as c:
        c.store("runpod", RUNPOD)
        c.store("wandb", WANDB)
    yield a
    a.cleanup()


def _wait_for_idle_close(a: AgentProcess, c: Client) -> None:
    """Until the agent has closed the client's idle connection (it logs nothing at
    INFO; watch the socket instead)."""
    sock = c._sock
    assert sock is not None
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        import select

        if select.select([sock], [], [], 0.05)[0]:  # readable: EOF from the agent
            return
    raise AssertionError("the agent never closed the idle connection")


def test_idle_connection_closed_by_the_agent_is_replaced(quick_idle_agent: AgentProcess) -> None:
    with quick_idle_agent.client(timeout=10) as c:
        for _ in range(3):
            assert c.get("runpod") == RUNPOD
            _wait_for_idle_close(quick_idle_agent, c)
            assert c.get("wandb") == WANDB  # transparently on a new connection
        # a delete too: the write fails before the request left, so resending is safe
        _wait_for_idle_close(quick_idle_agent, c)
        c.delete("wandb")
        with pytest.raises(errors.NotFound):
            c.get("wandb")


async def test_async_idle_connection_closed_by_the_agent_is_replaced(quick_idle_agent: AgentProcess) -> None:
    async with AsyncClient(quick_idle_agent.socket, autostart=False, timeout=10) as c:
        for _ in range(3):
            assert await c.get("runpod") == RUNPOD
            await asyncio.sleep(1.0)  # past the agent's 0.3 s idle deadline and its sweep
            assert await c.get("wandb") == WANDB
        await asyncio.sleep(1.0)
        await c.delete("wandb")  # the connection was known closed: nothing sent, safe to resend
        with pytest.raises(errors.NotFound):
            await c.get("wandb")
