"""A pipelined batch far larger than every buffer between client and agent completes,
on both clients: neither writes its whole batch while the agent waits for it to read.

The agent stops reading a connection whose replies are not read; a client that sent
every request before reading any reply would block in its write while the agent
blocks in its own (until the timeout). The batch size is computed from the buffers
so that both the requests and the replies of the batch exceed, several times over,
everything the kernel and the agent can hold of them.
"""

from __future__ import annotations

import socket

import pytest

from client import AsyncClient, errors, protocol
from support import AgentProcess, connect, raw_request

VALUE = "v" * 40


def batch_size(a: AgentProcess) -> int:
    """Requests enough that neither their bytes nor their replies' fit what both ends buffer."""
    with connect(a) as sock:  # a connection to the agent, as the clients' are made
        kernel = sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) + sock.getsockopt(
            socket.SOL_SOCKET, socket.SO_RCVBUF
        )
    # the agent's socket has the same defaults; in its own memory it holds at most a
    # read high-water mark of two frames and one read's replies (under a frame each side)
    held = 2 * kernel + 4 * (protocol.MAX_FRAME + protocol.HEADER)
    request = len(raw_request("get", {"platform": "one", "expiry": True}))
    reply = len(protocol.encode_ok({"value": VALUE, "expires_at": None}))
    return 4 * held // min(request, reply)


@pytest.fixture
def stored(unlocked_agent: AgentProcess) -> AgentProcess:
    with unlocked_agent.client() as c:
        c.store("one", VALUE)
    return unlocked_agent


def test_a_batch_larger_than_the_buffers_completes_on_the_blocking_client(stored: AgentProcess) -> None:
    n = batch_size(stored)
    assert n > 50_000
    with stored.client(timeout=60) as c:
        assert c.get_many(["one"] * n) == [VALUE] * n
        results = c.call_many([("get", {"platform": "one"}), ("get", {"platform": "nope"})] * (n // 2))
        assert results[-2] == VALUE and isinstance(results[-1], errors.NotFound)
        assert len(results) == n // 2 * 2
        assert c.get("one") == VALUE  # the connection is in step after it


async def test_a_batch_larger_than_the_buffers_completes_on_the_async_client(stored: AgentProcess) -> None:
    n = batch_size(stored)
    async with AsyncClient(stored.socket, autostart=False, timeout=60) as c:
        assert await c.get_many(["one"] * n) == [VALUE] * n
        assert await c.get("one") == VALUE
