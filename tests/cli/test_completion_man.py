"""`agent completion bash|zsh|fish` and `agent man`, driven through real shells and
groff against a real agent. `agent` on PATH is a two-line wrapper that runs this
checkout's CLI (`python -m agent`), standing in for the installed console script."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from support import AgentProcess

HF = "hf_" + "ComplCanary" * 3


def agent_on_path(a: AgentProcess) -> dict[str, str]:
    bin_dir = a.home / "bin"
    bin_dir.mkdir(exist_ok=True)
    wrapper = bin_dir / "agent"
    wrapper.write_text(f'#!/bin/sh\nexec {sys.executable} -m agent "$@"\n')
    wrapper.chmod(0o755)
    return {**a.env, "PATH": f"{bin_dir}:{a.env.get('PATH', '/usr/bin:/bin')}"}


def script(a: AgentProcess, shell: str) -> str:
    done = a.cli("completion", shell)
    assert done.returncode == 0, done.stderr
    return done.stdout


BASH_COMPLETE = """
eval "$(agent completion bash)"
complete -p agent
COMP_LINE="$1"; COMP_POINT=${#COMP_LINE}; COMP_TYPE=9
read -ra COMP_WORDS <<< "$COMP_LINE"
[[ "$COMP_LINE" == *" " ]] && COMP_WORDS+=("")
COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))
_python_argcomplete agent "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
printf 'reply:%s\\n' "${COMPREPLY[@]}"
"""


def bash_complete(env: dict[str, str], line: str) -> list[str]:
    done = subprocess.run(["bash", "-c", BASH_COMPLETE, "bash", line], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert "-F _python_argcomplete agent" in done.stdout  # `complete -p agent`: the script is loaded
    return [w.strip() for w in done.stdout.splitlines() if w.startswith("reply:") and w != "reply:"]


def test_bash_completes_subcommands_options_and_stored_platforms(unlocked_agent: AgentProcess) -> None:
    a = unlocked_agent
    with a.client() as c:
        c.store("huggingface", HF)
        c.store("runpod", "rp_" + "x" * 30, "token")
    env = agent_on_path(a)
    assert bash_complete(env, "agent ge") == ["reply:get"]
    assert set(bash_complete(env, "agent r")) >= {"reply:run", "reply:rm", "reply:rotate-key"}
    assert "reply:--env-file" in bash_complete(env, "agent run --env")
    assert bash_complete(env, "agent get hu") == ["reply:huggingface"]
    assert bash_complete(env, "agent exec --platform ru") == ["reply:runpod"]
    assert bash_complete(env, "agent get runpod --type ") == ["reply:token"]
    # names only, and they complete while the vault is locked (nothing is unlocked for it)
    with a.client() as c:
        c.lock()
    names = [w for w in bash_complete(env, "agent rm ") if not w.startswith("reply:-")]  # options come too
    assert names == ["reply:huggingface", "reply:runpod"]
    with a.client() as c:
        assert c.status()["locked"] is True
    a.stop()
    assert bash_complete(env, "agent get hu") == []  # no agent: nothing offered, and none started
    assert not a.socket.exists()


@pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh is not installed")
def test_zsh_script_loads_into_compinit(unlocked_agent: AgentProcess) -> None:
    a = unlocked_agent
    env = agent_on_path(a)
    path = a.home / "agent.zsh"
    path.write_text(script(a, "zsh"))
    assert subprocess.run(["zsh", "-n", str(path)], capture_output=True, timeout=30).returncode == 0
    done = subprocess.run(["zsh", "-f", "-c", f'autoload -U compinit && compinit -u -D && source {path} && '
                          'print -r -- "$_comps[agent]"'], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "_python_argcomplete", done.stderr


@pytest.mark.skipif(shutil.which("fish") is None, reason="fish is not installed")
def test_fish_completes_subcommands_and_stored_platforms(unlocked_agent: AgentProcess) -> None:
    a = unlocked_agent
    with a.client() as c:
        c.store("huggingface", HF)
    env = agent_on_path(a)
    path = a.home / "agent.fish"
    path.write_text(script(a, "fish"))
    assert subprocess.run(["fish", "--no-execute", str(path)], capture_output=True, timeout=30).returncode == 0
    for line, word in (("agent ge", "get"), ("agent show hu", "huggingface")):
        done = subprocess.run(["fish", "--no-config", "-c", f"source {path}; complete -C '{line}'"], env=env,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert [w.split("\t")[0] for w in done.stdout.splitlines()] == [word], done.stdout


def test_the_man_page_is_generated_from_the_parser_and_renders(tmp_path: Path, agent: AgentProcess) -> None:
    done = agent.cli("man")
    assert done.returncode == 0, done.stderr
    page = tmp_path / "agent.1"
    page.write_text(done.stdout)
    assert done.stdout.startswith('.TH AGENT "1"') and 'agent \\- credential agent for API keys' in done.stdout
    if shutil.which("groff") is None:
        pytest.skip("groff is not installed; the page was generated but not rendered")
    rendered = subprocess.run(["groff", "-man", "-Tutf8", "-P", "-cbou", "-ww", str(page)], capture_output=True,
                              text=True, timeout=60)
    assert rendered.returncode == 0 and rendered.stderr == "", rendered.stderr  # -ww: no warning either
    text = rendered.stdout
    for command in ("agent get", "agent run", "agent exec", "agent audit", "agent completion", "agent man"):
        assert command in text, command
    assert "--env-file" in text and "--by COMMAND" in text
    if shutil.which("man"):
        shown = subprocess.run(["man", "-l", str(page)], capture_output=True, text=True, timeout=60,
                               env={"MANPAGER": "cat", "PATH": "/usr/bin:/bin", "MANWIDTH": "100"})
        assert shown.returncode == 0 and "agent run" in shown.stdout
