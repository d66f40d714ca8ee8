"""How clients reach the agent: who is on the other end, and what listens.

Rules of this package:
- a ``Listener`` owns one endpoint (``unix.py``: a Unix socket; ``pipe.py``: a
  Windows named pipe): it starts serving a protocol factory, says who a
  connection's peer is and whether that is this user, and notices when its
  endpoint was taken over;
- ``connection.py`` is the one ``asyncio.Protocol`` of the agent: framing, order of
  replies, limits; it knows nothing of credentials and nothing of the endpoint;
- a failure to set up an endpoint is a ``ListenError`` with a message for the
  user, never ``SystemExit`` from library code.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from typing import Protocol

__all__ = ["Peer", "Listener", "Serving", "ListenError", "NO_PEER"]


@dataclasses.dataclass(frozen=True)
class Peer:
    """Who is on the other end of a connection, as far as the OS tells."""

    pid: int | None
    uid: int | None
    gid: int | None
    exe: str | None = None  # read when it connected: the pid may be reused later
    caller: str | None = None  # a Python caller's script or module (agent.transport.callers)
    sid: str | None = None  # Windows: the user SID of the peer process's token
    # Linux, read when it connected: the process's start time (with the pid, one process,
    # not whoever gets the pid later) and its executable's (device, inode), which a mount
    # namespace cannot rename
    started: int | None = None
    exe_id: tuple[int, int] | None = None


NO_PEER = Peer(None, None, None)


class ListenError(Exception):
    """The endpoint cannot be set up (a path in the way, a bad socket from systemd)."""


class Serving(Protocol):
    """What ``Listener.start`` returns (an ``asyncio.Server``, or a pipe server)."""

    def close(self) -> None:
        """Stop accepting connections."""
        ...


class Listener(Protocol):
    address: str  # where clients connect, for logs and `agent status`
    activated: bool  # handed over by the service manager (systemd socket activation)

    async def start(self, factory: Callable[[], asyncio.Protocol]) -> Serving:
        """Serve connections, each with a new protocol from ``factory``."""
        ...

    def admits(self, peer: Peer) -> bool:
        """Whether ``peer`` is this user (or the OS cannot tell, where it never can)."""
        ...

    def peer(self, transport: asyncio.BaseTransport) -> Peer:
        """The credentials of a connection's peer, from the kernel."""
        ...

    def hung_up(self, transport: asyncio.BaseTransport) -> bool:
        """Whether a peer that sent EOF is gone for good (closed), not just done
        sending (a half-close, after which it still reads its replies)."""
        ...

    async def taken_over(self) -> None:
        """Return once clients can no longer reach this endpoint (never, for some)."""
        ...

    def close(self) -> None:
        """Stop listening and remove what this listener created."""
        ...
