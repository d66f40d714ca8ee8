"""Scoped grants on real process trees: `agent exec --grant` and `agent run --grant` give
their command and its children the keys they name, nothing else without approval."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

from support import PASSPHRASE, AgentProcess, short_tmpdir, until

READ = (
    "import subprocess, sys\n"
    "from client import Client, errors\n"
    "names = sys.argv[1:]\n"
    "if names[:1] == ['--child']:  # read from a grandchild, a process further down the tree\n"
    "    sys.exit(subprocess.run([sys.executable, __file__, *names[1:]]).returncode)\n"
    "with Client() as c:\n"
    "    for name in names:\n"
    "        try:\n"
    "            print(name, c.get(name), flush=True)\n"
    "        except errors.AgentError as e:\n"
    "            print(name, type(e).__name__, e.message, flush=True)\n"
)


def agent_with(rules: str = "", timeout: str = "2") -> AgentProcess:
    home = short_tmpdir()
    (home / "config" / "credential-agent").mkdir(parents=True)
    (home / "config" / "credential-agent" / "config.toml").write_text(rules)
    a = AgentProcess(home=home, env={"CREDENTIAL_AGENT_CONFIRM_TIMEOUT": timeout}).start()
    a.init_passphrase()
    with a.client() as c:
        for name in ("huggingface", "openai", "wandb"):
            c.store(name, f"{name}-value", validate=False)
    return a


def lines(text: str) -> dict[str, str]:
    return {line.split(" ", 1)[0]: line.split(" ", 1)[1] for line in text.splitlines()}


def test_a_granted_tree_reads_its_keys_and_is_asked_for_others(tmp_path: Path) -> None:
    a = agent_with()
    reader = tmp_path / "reader.py"
    reader.write_text(READ)
    try:
        done = a.cli("exec", "--grant", "--platform", "huggingface", "--",
                     sys.executable, str(reader), "--child", "huggingface", "openai")
        assert done.returncode == 0, done.stderr
        assert "agent: granted 1 credential to " in done.stderr
        got = lines(done.stdout)
        assert got["huggingface"] == "huggingface-value"  # a grandchild of the granting process
        assert got["openai"].startswith("Denied openai/api-key needs approval (not granted to the process tree of pid")
        # no variable was set: the value did not sit in the environment
        env = a.cli("exec", "--grant", "--platform", "huggingface", "--", sys.executable, "-c",
                    "import os; print(sorted(k for k in os.environ if 'HF' in k or 'HUGGING' in k))")
        assert env.stdout == "[]\n"
        # outside the tree nothing changed: no rules, every key as always
        with a.client() as c:
            assert c.get("openai") == "openai-value"
        denied = [r for r in _audit(a) if r["op"] == "get" and r["result"] == "denied"]
        assert any(r["platform"] == "openai" for r in denied)
        assert any(r["op"] == "grant" and r["result"] == "ok" for r in _audit(a))
    finally:
        a.cleanup()


def _audit(a: AgentProcess) -> list[dict[str, object]]:
    def rows() -> list[dict[str, object]] | None:
        with a.client() as c:
            found = c.audit()
        return found if any(r["op"] == "grant" for r in found) else None

    result: list[dict[str, object]] = until(rows, 10, "the grant in the audit log")
    return result


def test_inside_a_tree_the_user_can_approve_another_key(tmp_path: Path) -> None:
    a = agent_with(timeout="20")
    reader = tmp_path / "reader.py"
    reader.write_text(READ)
    try:
        out: list[str] = []
        job = threading.Thread(target=lambda: out.append(a.cli(
            "exec", "--grant", "--platform", "huggingface", "--", sys.executable, str(reader), "wandb").stdout))
        job.start()

        def waiting() -> list[dict[str, object]] | None:
            with a.client() as c:
                found = c.approvals()
            return found or None

        [request] = until(waiting, 20, "the job's read of wandb waiting for approval")
        assert request["platform"] == "wandb" and "not granted to the process tree" in str(request["why"])
        approved = a.cli("approve", str(request["id"]), input=PASSPHRASE + "\n")
        assert approved.returncode == 0, approved.stderr
        job.join(30)
        assert lines(out[0]) == {"wandb": "wandb-value"}
    finally:
        a.cleanup()


def test_a_grant_never_widens_what_the_granting_process_may_read(tmp_path: Path) -> None:
    a = agent_with('[access."openai"]\nrule = "deny"\n')
    try:
        done = a.cli("exec", "--grant", "--platform", "openai", "--", "true")
        assert done.returncode == 1
        assert "openai/api-key may not be read by" in done.stderr and '[access."openai"]' in done.stderr
        # a rule's deny holds inside a tree too
        reader = tmp_path / "reader.py"
        reader.write_text(READ)
        inside = a.cli("exec", "--grant", "--platform", "huggingface", "--", sys.executable, str(reader), "openai")
        assert lines(inside.stdout)["openai"].startswith("Denied openai/api-key may not be read by")
    finally:
        a.cleanup()


def test_run_grants_the_references_of_an_env_file(tmp_path: Path) -> None:
    a = agent_with()
    reader = tmp_path / "reader.py"
    reader.write_text(READ)
    env_file = tmp_path / ".env"
    env_file.write_text("HF_TOKEN=agent://huggingface\nPLAIN=kept\n")
    try:
        done = a.cli("run", "--grant", "--env-file", str(env_file), "--", sys.executable, "-c",
                     "import os, runpy, sys; print('PLAIN', os.environ.get('PLAIN'), 'HF', os.environ.get('HF_TOKEN'));"
                     f"sys.argv = ['r', 'huggingface']; runpy.run_path({str(reader)!r})")
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines()[0] == "PLAIN kept HF None"
        assert lines("\n".join(done.stdout.splitlines()[1:])) == {"huggingface": "huggingface-value"}
    finally:
        a.cleanup()
