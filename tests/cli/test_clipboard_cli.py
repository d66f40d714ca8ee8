"""`agent get --clip` with a real clipboard: xclip and xsel on a private Xvfb display,
against a real agent. The clearing helper is a real detached process; the tests wait
for it to finish (not for a time) before looking at the clipboard."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from support import AgentProcess

HF = "hf_" + "ClipCanary" * 3
needs_x = pytest.mark.skipif(shutil.which("Xvfb") is None, reason="Xvfb is not installed")


@pytest.fixture(scope="module")
def display() -> Iterator[str]:
    """A private X server; stopped by its recorded pid."""
    if shutil.which("Xvfb") is None:
        pytest.skip("Xvfb is not installed")
    for n in range(150, 250):
        if not Path(f"/tmp/.X11-unix/X{n}").exists() and not Path(f"/tmp/.X{n}-lock").exists():
            break
    proc = subprocess.Popen(["Xvfb", f":{n}", "-nolisten", "tcp", "-screen", "0", "64x64x8"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while not Path(f"/tmp/.X11-unix/X{n}").exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.skip("Xvfb did not start")
        time.sleep(0.05)
    yield f":{n}"
    proc.terminate()
    proc.wait(10)


def paste(env: dict[str, str]) -> bytes:
    return subprocess.run(["xclip", "-selection", "clipboard", "-out"], env=env, capture_output=True,
                          timeout=30).stdout


def copy_other(env: dict[str, str], text: bytes) -> None:
    subprocess.run(["xclip", "-selection", "clipboard", "-in"], env=env, input=text, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, timeout=30, check=True)


def helpers(display: str) -> list[int]:
    """The clearing helpers of this display (this user's processes, found through /proc)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            environ = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue
        if b"clipboard.watch" in cmdline and f"DISPLAY={display}".encode() in environ.split(b"\0"):
            found.append(int(pid))
    return found


def wait_gone(pids: list[int]) -> None:
    deadline = time.monotonic() + 60  # a guard against a hang, not a measurement
    while any(Path(f"/proc/{p}").exists() and b"zombie" not in Path(f"/proc/{p}/status").read_bytes().lower()
              for p in pids):
        assert time.monotonic() < deadline, "the clearing helper never finished"
        time.sleep(0.05)


@pytest.fixture
def stored(unlocked_agent: AgentProcess) -> AgentProcess:
    with unlocked_agent.client() as c:
        c.store("huggingface", HF)
    return unlocked_agent


@needs_x
@pytest.mark.parametrize("tool", ["xclip", "xsel"])
def test_clip_copies_then_clears_what_it_copied(stored: AgentProcess, display: str, tool: str) -> None:
    if shutil.which(tool) is None or shutil.which("xclip") is None:
        pytest.skip(f"{tool} is not installed")
    a = stored
    bin_dir = a.home / f"bin-{tool}"  # only this tool on PATH, so it is the one chosen
    bin_dir.mkdir()
    os.symlink(shutil.which(tool), bin_dir / tool)
    env = {**a.env, "DISPLAY": display}
    done = a.cli("get", "huggingface", "--clip", "--clip-timeout", "1", env={**env, "PATH": str(bin_dir)})
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"copied huggingface/api-key to the clipboard ({tool}); cleared in 1 s if it still holds it\n"
    assert HF not in done.stdout + done.stderr
    pids = helpers(display)
    assert len(pids) == 1
    assert paste(env) == HF.encode()
    # the value is on the helper's pipe, never in its argv or environment
    for name in ("cmdline", "environ"):
        assert HF.encode() not in Path(f"/proc/{pids[0]}/{name}").read_bytes()
    wait_gone(pids)
    assert paste(env) == b""


@needs_x
def test_clip_leaves_something_copied_since(stored: AgentProcess, display: str) -> None:
    if shutil.which("xclip") is None:
        pytest.skip("xclip is not installed")
    a = stored
    env = {**a.env, "DISPLAY": display}
    done = a.cli("get", "huggingface", "--clip", "--clip-timeout", "2", env=env)
    assert done.returncode == 0, done.stderr
    pids = helpers(display)
    copy_other(env, b"a note the user copied")
    wait_gone(pids)
    assert paste(env) == b"a note the user copied"


def test_no_clipboard_tool_is_a_clear_error(stored: AgentProcess) -> None:
    a = stored
    empty = a.home / "empty-bin"
    empty.mkdir()
    for extra in ({"PATH": str(empty), "DISPLAY": ":0"}, {"DISPLAY": "", "WAYLAND_DISPLAY": ""}):
        done = a.cli("get", "huggingface", "--clip", env=extra)
        assert done.returncode == 1
        assert done.stderr.startswith("agent: no clipboard tool to copy with: install wl-clipboard")
        assert HF not in done.stdout + done.stderr
    bad = a.cli("get", "huggingface", "--clip", "--clip-timeout", "forever")
    assert bad.returncode == 2 and "--clip-timeout" in bad.stderr
