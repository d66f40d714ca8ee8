"""What of the Windows and macOS code paths can be checked anywhere: the pipe's name and
security descriptor, the flags it is made with, the macOS xucred, the macOS socket dir,
the Windows logon task and the LaunchAgent commands, the keystore entry rules, the import
rules on Linux, and the CI workflow file. Pure or subprocess tests; the real pipe is
tests/agent/test_pipe.py (Windows only)."""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from agent import service_units as units
from agent.keys import keyring as keystore
from client import errors, transport, win32
from client import paths as client_paths
from support import ROOT

SID = "S-1-5-21-1004336348-1177238915-682003330-1001"
WORKFLOW = ROOT / ".github" / "workflows" / "ci.yml"
posix_only = pytest.mark.skipif(sys.platform == "win32", reason="POSIX uids and modes: not on Windows")


# --- the Windows named pipe ---------------------------------------------------------------
def test_pipe_name_is_per_user_sid_and_profile() -> None:
    assert win32.pipe_name(SID) == f"\\\\.\\pipe\\credential-agent-{SID}"
    assert win32.pipe_name(SID, "work") == f"\\\\.\\pipe\\credential-agent-{SID}-work"
    # a domain user and a local user of the same name have two SIDs, so two pipes
    other = SID.rsplit("-", 1)[0] + "-1002"
    assert win32.pipe_name(other) != win32.pipe_name(SID)
    for not_a_sid in ("alice", "CORP\\alice", "", "S-1-5-21-x"):
        with pytest.raises(ValueError, match="SID"):
            win32.pipe_name(not_a_sid)
    with pytest.raises(ValueError, match="256"):
        win32.pipe_name(SID, "p" * 300)


def test_pipe_addresses_are_told_apart_from_socket_paths() -> None:
    assert transport.is_pipe(win32.pipe_name(SID))
    assert win32.is_pipe(win32.pipe_name(SID))
    assert not transport.is_pipe("/run/user/1000/credential-agent/agent.sock")
    assert not transport.is_pipe("C:\\Users\\alice\\agent.sock")


def test_the_dacl_admits_our_sid_only() -> None:
    sddl = win32.pipe_sddl(SID)
    assert sddl.startswith("D:P")  # protected: nothing inherited from the parent
    aces = re.findall(r"\(([^)]*)\)", sddl)
    assert aces == [f"A;;GA;;;{SID}"]  # one allow entry, for us; no deny-less gaps, no groups
    assert re.findall(r"S-1-[0-9-]+", sddl) == [SID]
    for bad in ("WD", "S-1-1-0)(A;;GA;;;WD", "alice", ""):
        with pytest.raises(ValueError):
            win32.pipe_sddl(bad)


def test_the_pipe_rejects_remote_clients_and_shares_no_name() -> None:
    assert win32.PIPE_MODE & win32.PIPE_REJECT_REMOTE_CLIENTS
    assert win32.PIPE_MODE & 0x1 == 0  # PIPE_TYPE_MESSAGE not set: a byte stream, as the socket
    assert win32.open_mode(first=True) & win32.FILE_FLAG_FIRST_PIPE_INSTANCE
    assert not win32.open_mode(first=False) & win32.FILE_FLAG_FIRST_PIPE_INSTANCE


@pytest.mark.skipif(sys.platform == "win32", reason="checks what Linux and macOS load")
def test_outside_windows_the_win32_modules_import_and_load_no_windows_api() -> None:
    code = (
        "import sys, ctypes\n"
        "import client, agent.transport.pipe, client.win32, client._pipe, agent.daemon, agent.hardening\n"
        "assert not hasattr(ctypes, 'windll') and 'ctypes.wintypes' not in sys.modules\n"
        "assert not hasattr(client.win32, 'create_pipe') and not hasattr(client._pipe, 'connect')\n"
        "from client import Client\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_a_plain_client_never_loads_the_pipe_code() -> None:
    code = ("import sys, client; client.Client()\n"
            "print(sorted(m for m in sys.modules if m in ('client.win32', 'client._pipe', 'ctypes')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "CREDENTIAL_AGENT_SOCK": str(ROOT / "nowhere.sock")})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_a_pipe_address_outside_windows_is_no_agent() -> None:
    from client import Client

    with pytest.raises(errors.AgentUnavailable), Client(win32.pipe_name(SID), autostart=False) as c:
        c.hello()


# --- macOS --------------------------------------------------------------------------------
def _xucred(uid: int, version: int = 0) -> bytes:
    # struct xucred { u_int cr_version; uid_t cr_uid; short cr_ngroups; gid_t cr_groups[16]; }
    raw = struct.pack("=IIh2x16I", version, uid, 2, 20, 12, *[0] * 14)
    assert len(raw) == transport.XUCRED_SIZE
    return raw


def test_xucred_gives_the_uid() -> None:
    assert transport.parse_xucred(_xucred(501)) == 501
    assert transport.parse_xucred(_xucred(0)) == 0
    with pytest.raises(OSError, match="version 3"):
        transport.parse_xucred(_xucred(501, version=3))
    with pytest.raises(OSError, match="too short"):
        transport.parse_xucred(b"\0\0\0")


@posix_only
def test_macos_socket_goes_in_a_private_tmpdir(tmp_path: Path) -> None:
    private = tmp_path / "T"
    private.mkdir(mode=0o700)
    assert client_paths.darwin_runtime_dir(str(private) + "/") == str(private)
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    os.chmod(shared, 0o777)
    assert client_paths.darwin_runtime_dir(str(shared)) != str(shared)
    assert client_paths.darwin_runtime_dir("relative/T") != "relative/T"
    deep = tmp_path / ("d" * 90)
    deep.mkdir(mode=0o700)
    assert client_paths.darwin_runtime_dir(str(deep)) != str(deep)  # past sun_path


@posix_only
def test_the_launch_agent_is_bootstrapped_in_the_gui_domain(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    p = units.plan("launchd", ["/opt/ca/bin/agent"])
    (plist,) = p.files
    assert p.enable == [["launchctl", "bootstrap", f"gui/{os.getuid()}", str(plist)]]
    assert p.disable == [["launchctl", "bootout", f"gui/{os.getuid()}/{units.label()}"]]


# --- the Windows logon task -----------------------------------------------------------------
NS = {"t": "http://schemas.microsoft.com/windows/2004/02/mit/task"}


def test_the_logon_task_runs_the_agent_windowless_for_this_user_only() -> None:
    command = units.task_command("C:\\Py\\python.exe", "C:\\src\\credential-agent")
    assert command[0] == "C:\\Py\\pythonw.exe" and command[1] == "-I"
    assert command[-2:] == ["start", "--quiet"] and "C:\\src\\credential-agent" in command
    xml = units.render_task("credential-agent", command, "CORP\\bob & co")
    task = ET.fromstring(xml.split("\n", 1)[1])  # ElementTree refuses an str that declares UTF-16
    assert task.findtext("t:Triggers/t:LogonTrigger/t:UserId", namespaces=NS) == "CORP\\bob & co"
    principal = task.find("t:Principals/t:Principal", NS)
    assert principal is not None
    assert principal.findtext("t:LogonType", namespaces=NS) == "InteractiveToken"
    assert principal.findtext("t:RunLevel", namespaces=NS) == "LeastPrivilege"
    assert task.findtext("t:Settings/t:ExecutionTimeLimit", namespaces=NS) == "PT0S"
    assert task.findtext("t:Actions/t:Exec/t:Command", namespaces=NS) == "C:\\Py\\pythonw.exe"
    args = task.findtext("t:Actions/t:Exec/t:Arguments", namespaces=NS) or ""
    assert subprocess.list2cmdline(command[1:]) == args and args.endswith("start --quiet")


def test_schtasks_registers_the_xml_and_the_file_is_utf16(tmp_path: Path) -> None:
    xml_path = tmp_path / units.TASK_XML_NAME
    assert units.schtasks_create("credential-agent", xml_path) == [
        "schtasks", "/Create", "/F", "/TN", "credential-agent", "/XML", str(xml_path)]
    text = units.render_task("credential-agent", ["C:\\Py\\pythonw.exe", "-I"], "bob")
    units.write(xml_path, text)
    assert xml_path.read_bytes()[:2] == b"\xff\xfe"  # a BOM: what schtasks /XML reads
    assert units.read(xml_path) == text


def test_a_logon_task_refuses_what_it_cannot_carry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CREDENTIAL_AGENT_PROFILE", "work")
    with pytest.raises(units.ServiceError, match="carries no environment"):
        units.plan("schtasks")


# --- the one keystore entry -------------------------------------------------------------------
def test_the_keystore_entry_rules() -> None:
    key = "q" * 43 + "="
    keystore.check_entry("credential-agent", "master-key-0123456789abcdef", key)
    keystore.check_entry("credential-agent", "master-key-0123456789abcdef-89abcdef", key)
    keystore.check_entry("credential-agent", "probe-1a2b3c4d", "tok_en-x")
    assert len(key.encode("utf-16-le")) <= keystore.CRED_MAX_CREDENTIAL_BLOB_SIZE
    for service, account, value in [
        ("other", "master-key-00", key),
        ("credential-agent", "master key 00", key),
        ("credential-agent", "master-key-\u00e9", key),
        ("credential-agent", "runpod", key),
        ("credential-agent", "master-key-00", '{"platform": "runpod", "value": "..."}'),
        ("credential-agent", "master-key-00", "k" * 2000),
        ("credential-agent", "master-key-00", ""),
    ]:
        with pytest.raises(errors.Internal) as info:
            keystore.check_entry(service, account, value)
        assert value not in info.value.message or not value


async def test_a_bad_entry_never_reaches_the_keystore() -> None:
    # the backend here is keyring's fail backend: reaching it would raise KeystoreUnavailable
    with pytest.raises(errors.Internal, match="not a name of ours"):
        await keystore.set_key("../../etc", b"q" * 44)


# --- the workflow ---------------------------------------------------------------------------------
def test_the_workflow_runs_the_three_platforms() -> None:
    text = WORKFLOW.read_text(encoding="utf-8")
    for runner in ("ubuntu-latest", "macos-latest", "windows-latest"):
        assert f"runs-on: {runner}" in text
    assert "bash .ci/run" in text  # the Linux job is the one .ci/run runs


def _validator() -> str | None:
    found = shutil.which("check-jsonschema") or shutil.which("check-jsonschema", path=str(Path(sys.executable).parent))
    return found


def test_the_workflow_is_valid_against_the_github_schema(tmp_path: Path) -> None:
    tool = _validator()
    if tool is None:
        pytest.skip("check-jsonschema is not installed (it is in the test extra)")

    def check(path: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run([tool, "--builtin-schema", "vendor.github-workflows", str(path)],
                              capture_output=True, text=True, timeout=120)

    done = check(WORKFLOW)
    assert done.returncode == 0, done.stdout + done.stderr
    broken = tmp_path / "ci.yml"  # the validator does refuse a bad file: a job without runs-on
    broken.write_text(WORKFLOW.read_text(encoding="utf-8").replace("runs-on: macos-latest", "run-on: macos-latest"),
                      encoding="utf-8")
    assert check(broken).returncode != 0
