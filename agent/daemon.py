"""Running the agent: hardening, one agent per vault, its endpoint, signals, a clean exit.

- One agent per vault (``transport.unix.single_instance`` on a file beside it, so two
  runtime dirs, from cron and from a login, still meet): the loser says
  "already running" and exits 0 (1 when systemd started it for a waiting
  connection: exit 0 would make systemd start it again and again).
- SIGTERM/SIGINT: stop accepting, finish in-flight requests, remove the socket,
  exit 0. SIGUSR1: lock at once (panic wipe). SIGHUP: ignored (a closed terminal).
- Windows: the named pipe (``transport.pipe``) on the Proactor loop, one agent per
  vault by ``msvcrt.locking``; Ctrl+C and Ctrl+Break stop it as SIGINT does, and
  there is no SIGUSR1: the panic wipe is ``agent lock`` (the ``lock`` op) over the pipe.
- An agent whose endpoint was taken over (``Listener.taken_over``) stops.
- A failure to set up the endpoint is one line on stderr and exit status 1.
- ``ready``, when given, is called once the endpoint accepts connections (``agent serve
  --detach`` tells the process that waits for it, instead of that process polling).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import signal
import sys
from collections.abc import Callable

from agent import hardening
from agent.config import Options
from agent.handlers import make_dispatch
from agent.keys import early
from agent.remotes import team
from agent.state import Agent
from agent.transport import Listener, ListenError
from agent.transport.connection import Server
from client import paths, spawn

if sys.platform == "win32":
    from agent.transport import pipe
else:
    from agent.transport.unix import (
        AlreadyRunning,
        UnixListener,
        bound_path,
        prepare_dir,
        single_instance,
        systemd_socket,
    )

__all__ = ["serve", "connection_cap", "ADOPTED_LOCK_WAIT"]

log = logging.getLogger("agent.daemon")

# How long a socket-activated agent waits for the lock held by a self-started agent
# that is stopping because its socket was taken over (it checks every second and
# lets in-flight requests finish).
ADOPTED_LOCK_WAIT = 15.0
# How often the agent checks that its vault file is still the one at its path (a stat):
# a `rm -rf` of the data directory locks the agent within this, and no write lands in it.
VAULT_CHECK = 2.0
# Descriptors kept back from the connection cap: the vault and its WAL/SHM, the log,
# the listening socket, the event loop's own, keystore D-Bus connections, threads.
_FD_RESERVE = 64
# Windows handles have no per-process limit to stay under; "0 = as many as allowed" means this.
_WINDOWS_CAP = 4096


def connection_cap(configured: int) -> int:
    """The configured cap (0 = as many as descriptors allow), never above what the fd limit allows."""
    if sys.platform == "win32":
        return configured if configured > 0 else _WINDOWS_CAP
    import resource

    budget = max(1, resource.getrlimit(resource.RLIMIT_NOFILE)[0] - _FD_RESERVE)
    cap = min(configured, budget) if configured > 0 else budget
    if cap < configured:
        log.warning("connection cap lowered from %d to %d by the descriptor limit", configured, cap)
    return cap


def _loop_factory() -> tuple[str, type[asyncio.AbstractEventLoop] | None]:
    if os.environ.get("CREDENTIAL_AGENT_LOOP", "") != "asyncio":
        try:
            import uvloop

            return "uvloop", uvloop.Loop
        except ImportError:
            pass
    return "asyncio", None


def _on_signals(loop: asyncio.AbstractEventLoop, agent: Agent, stop: asyncio.Event) -> None:
    if sys.platform == "win32":
        # the Proactor loop has no add_signal_handler; a handler that wakes the loop does the same
        def wake(signum: int, frame: object) -> None:
            loop.call_soon_threadsafe(stop.set)

        for sig in (signal.SIGINT, signal.SIGBREAK):
            signal.signal(sig, wake)
        return
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, lambda: agent.lock(explicit=True, reason="SIGUSR1"))
    loop.add_signal_handler(signal.SIGHUP, lambda: None)  # survive the terminal closing


Ready = Callable[[], None] | None


async def _run(options: Options, listener: Listener, report: dict[str, bool], loop_name: str, ready: Ready) -> None:
    loop = asyncio.get_running_loop()
    agent = Agent(options, hardening=report, loop_name=loop_name)
    remotes = team.Remotes(agent, options.remotes)
    if remotes.active:
        agent.remotes = remotes
        remotes.start()
    server = Server(
        make_dispatch(agent),
        listener,
        max_connections=connection_cap(options.max_connections),
        idle_timeout=options.connection_idle_timeout,
        frame_timeout=options.frame_timeout,
    )
    stop = asyncio.Event()

    def request_stop() -> None:
        loop.call_soon(stop.set)  # after the reply to `stop` is written

    agent.on_stop = request_stop
    _on_signals(loop, agent, stop)
    await server.start()
    if ready is not None:
        ready()
    agent.warm()
    early.drop()  # a key read as the agent started that its vault did not take (agent.keys.early)
    how = "socket passed by systemd" if listener.activated else "own socket"
    log.info(
        "serving on %s (%s, pid %d, %s loop, up to %d connections, idle deadline %g s)",
        listener.address,
        how,
        os.getpid(),
        loop_name,
        server.max_connections,
        server.idle_timeout,
    )

    async def watch() -> None:
        await listener.taken_over()
        stop.set()

    async def watch_vault() -> None:  # a vault file deleted or replaced: lock, whatever else happens
        while True:
            await asyncio.sleep(VAULT_CHECK)
            agent.check_vault()

    watcher = asyncio.create_task(watch())
    vault_watcher = asyncio.create_task(watch_vault())
    try:
        await stop.wait()
        log.info("stopping")
        await server.close()
    finally:
        watcher.cancel()
        vault_watcher.cancel()
        await remotes.close()
        agent.close()


if sys.platform == "win32":

    def _serve(options: Options, report: dict[str, bool], ready: Ready) -> int:
        """Windows: the named pipe, on asyncio's default (Proactor) loop."""
        lock = paths.lock_path()
        paths.ensure_private_dir(lock.parent)
        try:
            with pipe.single_instance(lock):
                listener = pipe.PipeListener(str(options.socket))
                try:
                    asyncio.run(_run(options, listener, report, "asyncio", ready))
                finally:
                    listener.close()
        except pipe.AlreadyRunning:
            print(f"an agent is already running for {options.socket}", file=sys.stderr)
            return 0
        log.info("stopped")
        return 0

else:

    def _serve(options: Options, report: dict[str, bool], ready: Ready) -> int:
        passed = systemd_socket()
        if passed is not None:
            where = bound_path(passed) or options.socket
            if where != options.socket:
                log.warning("systemd passed a socket at %s, but clients look for %s", where, options.socket)
            options = dataclasses.replace(options, socket=where, socket_activated=True)
        lock = paths.lock_path()
        paths.ensure_private_dir(lock.parent)
        try:
            with single_instance(
                lock,
                wait=ADOPTED_LOCK_WAIT if passed else 0.0,
                fallback=paths.runtime_dir() / "agent.lock",
                socket=str(options.socket),
                held=early.held(lock),  # taken as the agent started, before its key was read (agent.keys.early)
            ):
                if passed is not None:
                    listener = UnixListener(passed, options.socket, activated=True)
                else:
                    prepare_dir(options.socket)
                    listener = UnixListener.bind(options.socket)
                loop_name, factory = _loop_factory()
                try:
                    if factory is None:
                        asyncio.run(_run(options, listener, report, loop_name, ready))
                    else:
                        with asyncio.Runner(loop_factory=factory) as runner:
                            runner.run(_run(options, listener, report, loop_name, ready))
                finally:
                    listener.close()
        except AlreadyRunning as held:
            if passed is not None:
                print(
                    f"another agent holds {lock} and did not stop within {ADOPTED_LOCK_WAIT:g} s; "
                    "stop it (`agent stop`) so that the socket-activated agent can start",
                    file=sys.stderr,
                )
                return 1
            if held.socket and held.socket != str(options.socket):  # the same vault, reached elsewhere
                print(
                    f"an agent is already running on this vault (pid {held.pid or '?'}), listening at {held.socket}, "
                    f"not at {options.socket}: set CREDENTIAL_AGENT_SOCK={held.socket} to reach it",
                    file=sys.stderr,
                )
                return 0
            print(f"an agent is already running for {options.socket}", file=sys.stderr)
            return 0
        log.info("stopped")
        return 0


def serve(options: Options, ready: Ready = None) -> int:
    """Run the agent in the foreground until it is stopped; return the exit status. ``ready``
    is called once it accepts connections."""
    report = hardening.harden()
    hardening.raise_fd_limit()
    # nothing of the caller's directory is held open or used; every path is absolute
    os.chdir("/")
    # an agent run by hand keeps only what it reads (keys exported in the shell that
    # started it do not live on in its environment, nor reach anything it runs)
    kept = spawn.clean_env()
    if any(r.kind == "aws-secrets-manager" for r in options.remotes):
        # boto3's credential chain starts with the environment (AWS_PROFILE, AWS_ACCESS_KEY_ID,
        # a container's or web identity's variables): kept only for an agent with an AWS remote
        kept = spawn.clean_env(aws=True)
    for name in [n for n in os.environ if n not in kept and not n.startswith("LISTEN_")]:
        del os.environ[name]
    try:
        return _serve(options, report, ready)
    except ListenError as e:
        print(str(e), file=sys.stderr)
        return 1
