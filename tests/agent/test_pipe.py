"""The Windows named pipe against real agents: both clients' round trip, the pipe's
real DACL, the first-instance rule, the peer check's pid, the Windows hardening report.
Windows only: they run in the windows CI job."""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import Iterator

import pytest

from support import PASSPHRASE, AgentProcess

pytestmark = pytest.mark.skipif(sys.platform != "win32", reason="named pipes: Windows only; runs in the windows CI job")

RUNPOD = "rp_" + "p" * 30


@pytest.fixture
def pipe_agent() -> Iterator[AgentProcess]:
    a = AgentProcess().start()
    a.init_passphrase()
    yield a
    a.cleanup()


def test_the_agent_listens_on_a_pipe(pipe_agent: AgentProcess) -> None:
    with pipe_agent.client() as c:
        st = c.status()
    assert st["socket"].startswith("\\\\.\\pipe\\credential-agent-")
    assert st["hardening"].get("wer_dialog_off") is True


def test_round_trip_through_the_blocking_client(pipe_agent: AgentProcess) -> None:
    import os

    with pipe_agent.client() as c:
        c.store("runpod", RUNPOD)
        assert c.get("runpod") == RUNPOD
        assert c.call_many([("get", {"platform": "runpod"}), ("hello", {})])[0] == RUNPOD
        # the peer check read our pid from GetNamedPipeClientProcessId
        assert {r["pid"] for r in c.audit(platform="runpod")} == {os.getpid()}
    assert "refused a connection" not in pipe_agent.log()


def test_round_trip_through_the_async_client(pipe_agent: AgentProcess) -> None:
    from client import AsyncClient

    async def run() -> str:
        async with AsyncClient(pipe_agent.socket, autostart=False) as c:
            await c.store("runpod", RUNPOD)
            await c.lock()
            await c.unlock(PASSPHRASE)
            return str(await c.get("runpod"))

    assert asyncio.run(run()) == RUNPOD  # the Proactor loop: asyncio's default on Windows


def test_the_pipe_dacl_names_only_our_sid(pipe_agent: AgentProcess) -> None:
    import ctypes
    from ctypes import wintypes

    from client import _pipe, win32

    advapi32 = ctypes.WinDLL("advapi32", use_last_error=True)
    stream = _pipe.connect(str(pipe_agent.socket), 5.0)
    try:
        dacl, sd = wintypes.LPVOID(), wintypes.LPVOID()
        # GetSecurityInfo(handle, SE_KERNEL_OBJECT, DACL_SECURITY_INFORMATION, ...)
        rc = advapi32.GetSecurityInfo(wintypes.HANDLE(stream._fileno()), 6, 4, None, None,
                                      ctypes.byref(dacl), None, ctypes.byref(sd))
        assert rc == 0, ctypes.FormatError(rc)
        text = wintypes.LPWSTR()
        assert advapi32.ConvertSecurityDescriptorToStringSecurityDescriptorW(sd, 1, 4, ctypes.byref(text), None)
        sddl = str(text.value)
    finally:
        stream.close()
    assert sddl.startswith("D:P")
    assert set(re.findall(r"S-1-[0-9-]+", sddl)) == {win32.current_sid()}
    assert not re.search(r";;;(WD|AU|BU|BA|SY|AN)\)", sddl)  # Everyone, users, admins, SYSTEM: none


def test_a_second_agent_cannot_share_the_pipe_name(pipe_agent: AgentProcess) -> None:
    other = AgentProcess(env={"CREDENTIAL_AGENT_SOCK": str(pipe_agent.socket)})  # another vault, the same name
    try:
        other.start(wait=False)
        assert other.proc is not None and other.proc.wait(30) == 1
        assert "exists already" in other.log()
    finally:
        other.cleanup()
    with pipe_agent.client() as c:
        assert c.hello()["protocol"] >= 1  # the first agent still serves


def test_service_install_dry_run_renders_the_logon_task(pipe_agent: AgentProcess) -> None:
    env = {k: v for k, v in pipe_agent.env.items() if k != "CREDENTIAL_AGENT_SOCK"}
    done = pipe_agent.cli("service", "install", "--dry-run", env={**env, "CREDENTIAL_AGENT_SOCK": ""})
    assert done.returncode == 0, done.stderr
    assert "<LogonTrigger>" in done.stdout and "schtasks /Create" in done.stdout
