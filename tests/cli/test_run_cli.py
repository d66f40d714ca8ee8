"""`agent run`: env files of agent:// references, masking, exit codes and signals,
through the real `agent` command against a real agent (a pty where a terminal is
involved)."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from agent.cli.masking import CONCEALED, Masker
from support import AgentProcess

HF = "hf_" + "RunCanaryHf" * 3
RP = "rp_" + "RunCanaryRp" * 3
WB = "RunCanaryWb" * 3 + "x" * 7  # 40 characters
MASK = CONCEALED.decode()
OK, ERROR, USAGE, LOCKED = 0, 1, 2, 3


@pytest.fixture
def filled(unlocked_agent: AgentProcess) -> AgentProcess:
    with unlocked_agent.client() as c:
        c.store("huggingface", HF)
        c.store("runpod", RP, "token")
        c.store("wandb", WB)
    return unlocked_agent


def env_file(a: AgentProcess, name: str, text: str) -> str:
    path = a.home / name
    path.write_text(text)
    return str(path)


def show(*names: str) -> list[str]:
    """A command printing each variable on a line of its own."""
    return [sys.executable, "-c", "import os, sys; [print(os.environ.get(n)) for n in sys.argv[1:]]", *names]


def test_references_in_env_files_and_the_environment_are_resolved(filled: AgentProcess) -> None:
    a = filled
    first = env_file(a, "a.env", "# keys for training\n\nexport HF_TOKEN=agent://huggingface\n"
                                 "RP='agent://runpod/token'\nPLAIN=\"two words\" # a comment\nLATER=first\n")
    second = env_file(a, "b.env", "LATER=second\n")
    done = a.cli("run", "--env-file", first, "--env-file", second, "--",
                 *show("HF_TOKEN", "RP", "PLAIN", "LATER", "WANDB_API_KEY", "CREDENTIAL_AGENT_EXEC"),
                 env={"WANDB_API_KEY": "agent://wandb", "LATER": "from the environment"})
    assert done.returncode == OK, done.stderr
    # stdout is a pipe: no masking by default
    assert done.stdout.splitlines() == [HF, RP, "two words", "second", WB, "1"]


def test_exit_status_and_stdin_are_the_commands_own(filled: AgentProcess) -> None:
    a = filled
    path = env_file(a, "e.env", "HF_TOKEN=agent://huggingface\n")
    code = "import sys; print(sys.stdin.read().upper()); sys.exit(7)"
    for mode in ("--mask", "--no-mask"):
        done = a.cli("run", mode, "--env-file", path, "--", sys.executable, "-c", code, input="piped in")
        assert done.returncode == 7 and done.stdout == "PIPED IN\n", (mode, done.stderr)
    missing = a.cli("run", "--env-file", path, "--", str(a.home / "no-such-command"))
    assert missing.returncode == 127 and "command not found" in missing.stderr


def test_a_missing_reference_stops_before_the_command_starts(filled: AgentProcess) -> None:
    a = filled
    marker = a.home / "ran"
    path = env_file(a, "e.env", "HF_TOKEN=agent://huggingface\nOPENAI_API_KEY=agent://openai/org-key\n")
    done = a.cli("run", "--env-file", path, "--", "touch", str(marker))
    assert done.returncode == ERROR
    assert "OPENAI_API_KEY=agent://openai/org-key" in done.stderr and "no credential openai/org-key" in done.stderr
    assert "touch was not started" in done.stderr
    bad = env_file(a, "bad.env", "X=agent://no spaces\n")
    done = a.cli("run", "--env-file", bad, "--", "touch", str(marker))
    assert done.returncode == ERROR and "X=agent://no spaces is not a reference" in done.stderr
    unreadable = a.cli("run", "--env-file", str(a.home / "none.env"), "--", "touch", str(marker))
    assert unreadable.returncode == ERROR and "cannot read" in unreadable.stderr
    usage = a.cli("run", "--env-file", path)
    assert usage.returncode == USAGE and "name the command" in usage.stderr
    with a.client() as c:
        c.lock()
    locked = a.cli("run", "--env-file", path, "--", "touch", str(marker))
    assert locked.returncode == LOCKED and "agent unlock" in locked.stderr
    assert not marker.exists()
    assert HF not in done.stderr + locked.stderr


def test_mask_conceals_values_in_stdout_and_stderr_even_split_across_writes(filled: AgentProcess) -> None:
    a = filled
    path = env_file(a, "e.env", "HF_TOKEN=agent://huggingface\nRP=agent://runpod/token\nPLAIN=visible\n")
    # each half of the value is its own write(2), flushed, so the two usually arrive in two reads
    code = ("import os; hf, rp = os.environ['HF_TOKEN'], os.environ['RP']; "
            "os.write(1, ('token ' + hf[:10]).encode()); os.write(1, (hf[10:] + ' end\\n').encode()); "
            "os.write(2, ('err ' + rp + ' ' + os.environ['PLAIN'] + '\\n').encode())")
    done = a.cli("run", "--mask", "--env-file", path, "--", sys.executable, "-c", code)
    assert done.returncode == OK, done.stderr
    assert done.stdout == f"token {MASK} end\n"
    assert done.stderr == f"err {MASK} visible\n"


def test_masker_holds_back_only_what_could_start_a_value() -> None:
    secrets = ["hf_abcdef", "hf_abc", "zzz"]
    text = b"a hf_abcdef b hf_abc c hf_ab d zzz hf_abcdefg"
    expected = b"a M b M c hf_ab d M Mg".replace(b"M", CONCEALED)
    for cut in range(len(text) + 1):
        for cut2 in range(cut, len(text) + 1):
            m = Masker(secrets)
            out = m.feed(text[:cut]) + m.feed(text[cut:cut2]) + m.feed(text[cut2:]) + m.flush()
            assert out == expected, (cut, cut2)
    m = Masker(secrets)
    assert m.feed(b"plain text, nothing held\n") == b"plain text, nothing held\n"
    assert m.feed(b"ends in hf_a") == b"ends in "  # could still become a value
    assert m.flush() == b"hf_a"
    assert "hf_" not in repr(m)


def test_masker_conceals_encoded_forms_and_values_with_escapes_inside() -> None:
    import base64
    import urllib.parse

    value = "hf_" + "Qx9/+" * 6
    for shown in (
        urllib.parse.quote(value, safe="").encode(),
        b"Authorization: Basic " + base64.b64encode(b"user:" + value.encode()),
        b"X" + base64.urlsafe_b64encode(b"ab" + value.encode()),
        value[:5].encode() + b"\x1b[1;31m" + value[5:20].encode() + b"\x1b[0m" + value[20:].encode(),
    ):
        for cut in range(0, len(shown) + 1, 3):  # the form split across two reads anywhere
            m = Masker([value])
            out = m.feed(shown[:cut]) + m.feed(shown[cut:]) + m.flush()
            assert CONCEALED in out, (shown, cut)
            assert value.encode() not in out and value[10:20].encode() not in out, (shown, cut)
    m = Masker([value])
    assert m.feed(b"plain \x1b[1mbold\x1b[0m text\n") == b"plain \x1b[1mbold\x1b[0m text\n"


def test_a_short_value_is_masked_only_as_a_word_of_its_own() -> None:
    m = Masker(["ell", "pin42"])
    out = m.feed(b"hello yellow, ell; spin42 pin42\n") + m.flush()
    assert out == b"hello yellow, " + CONCEALED + b"; spin42 " + CONCEALED + b"\n"


def test_masked_output_at_a_terminal_is_live_and_on_a_terminal(filled: AgentProcess) -> None:
    """At a terminal the command gets a pty of its own: it sees a tty (colours, line
    buffering), its first line shows while it still runs, and values are masked."""
    a = filled
    path = env_file(a, "e.env", "HF_TOKEN=agent://huggingface\n")
    go = a.home / "go"
    code = ("import os, sys, time\n"
            "print('first', sys.stdout.isatty(), sys.stderr.isatty())\n"  # print: buffered unless a tty
            f"while not os.path.exists({str(go)!r}): time.sleep(0.05)\n"
            "print('then', os.environ['HF_TOKEN'])\n")
    p = a.terminal("run", "--env-file", path, "--", sys.executable, "-c", code)
    p.expect("first True True")  # before the command ends: live
    go.touch()
    p.expect("then ")
    assert p.wait() == OK
    assert MASK in p.output and HF not in p.output


def test_mask_takes_stdout_and_stderr_on_one_terminal_as_one_stream(filled: AgentProcess) -> None:
    """A value written half to stdout, half to stderr is one value on the screen."""
    a = filled
    path = env_file(a, "e.env", "HF_TOKEN=agent://huggingface\n")
    code = ("import os, time; hf = os.environ['HF_TOKEN']; os.write(1, ('[' + hf[:12]).encode()); "
            "time.sleep(0.2); os.write(2, (hf[12:] + ']\\n').encode())")
    p = a.terminal("run", "--mask", "--env-file", path, "--", sys.executable, "-c", code)
    assert p.wait() == OK
    assert f"[{MASK}]" in p.output and HF[:12] not in p.output and HF[12:] not in p.output


def test_mask_is_on_by_default_on_a_terminal(filled: AgentProcess) -> None:
    a = filled
    path = env_file(a, "e.env", "HF_TOKEN=agent://huggingface\n")
    shown = show("HF_TOKEN")
    p = a.terminal("run", "--env-file", path, "--", *shown)
    assert p.wait() == OK
    assert MASK in p.output and HF not in p.output
    p = a.terminal("run", "--no-mask", "--env-file", path, "--", *shown)
    assert p.wait() == OK
    assert HF in p.output and MASK not in p.output


HANDLER = """
import os, signal, sys
got = []
def note(sig, frame):
    got.append(sig)
    print("got", sig, flush=True)
    if sig == signal.SIGTERM:
        sys.exit(3)
signal.signal(signal.SIGTERM, note)
signal.signal(signal.SIGINT, note)
print("ready", flush=True)
line = sys.stdin.readline()
print("signals", len(got), flush=True)
"""


def test_signals_sent_to_agent_run_reach_the_command(filled: AgentProcess) -> None:
    a = filled
    path = env_file(a, "e.env", "HF_TOKEN=agent://huggingface\n")
    proc = subprocess.Popen(a.command("run", "--mask", "--env-file", path, "--", sys.executable, "-c", HANDLER),
                            env=a.env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "ready\n"
        proc.send_signal(signal.SIGTERM)
        assert proc.stdout.readline() == f"got {int(signal.SIGTERM)}\n"
        assert proc.wait(30) == 3
    finally:
        proc.kill()
    # a command killed by a signal: 128 + N, as a shell reports it
    done = a.cli("run", "--mask", "--env-file", path, "--", sys.executable, "-c",
                 "import os, signal; os.kill(os.getpid(), signal.SIGKILL)")
    assert done.returncode == 128 + signal.SIGKILL


WAITER = """
import signal, sys
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
print("ready", flush=True)
info = signal.sigwaitinfo({signal.SIGINT})
print("got", info.si_signo, "from the kernel" if info.si_code == 0x80 else "from a process", flush=True)
sys.stdin.readline()
print("pending", signal.SIGINT in signal.sigpending(), flush=True)
"""


def test_ctrl_c_at_the_terminal_reaches_the_command_once(filled: AgentProcess) -> None:
    """The terminal sends SIGINT to the whole foreground group; `agent run` must not
    send the command a second one. The command takes the first with sigwaitinfo and then
    looks for another pending; a copy `agent run` sent while the first was still pending
    would merge with it unseen (standard signals do not queue), so this catches a copy
    sent after the command took the first one, the usual order."""
    a = filled
    path = env_file(a, "e.env", "HF_TOKEN=agent://huggingface\n")
    p = a.terminal("run", "--env-file", path, "--", sys.executable, "-c", WAITER)
    try:
        p.expect("ready")
        p.send("\x03")
        p.expect(f"got {int(signal.SIGINT)} from the kernel")
        p.send("done\n")
        assert p.wait() == OK
        assert "pending False" in p.output
    finally:
        p.kill()


def test_nothing_is_left_behind(filled: AgentProcess, tmp_path: Path) -> None:
    a = filled
    path = env_file(a, "e.env", "HF_TOKEN=agent://huggingface\n")
    done = a.cli("run", "--mask", "--env-file", path, "--", sys.executable, "-c", "import sys; sys.exit(0)")
    assert done.returncode == OK
    assert HF not in a.log()
    leftovers = [p for p in a.home.rglob("*") if p.is_file() and HF.encode() in p.read_bytes()]
    assert leftovers == []
