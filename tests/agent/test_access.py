"""[access] rules on real agent processes, with real callers: programs with different
executables and scripts, a forged argv[0], and `agent approve` from another process."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from client import errors
from support import PASSPHRASE, ROOT, AgentProcess, SecretService, short_tmpdir, until

REAL_PYTHON = str(Path(sys.executable).resolve())
READ = (
    "import sys\n"
    "from client import Client, errors\n"
    "with Client() as c:\n"
    "    for name in sys.argv[1:]:\n"
    "        try:\n"
    "            print(name, c.get(name), flush=True)\n"
    "        except errors.AgentError as e:\n"
    "            print(name, type(e).__name__, e.message, flush=True)\n"
)


def with_rules(rules: str, env: dict[str, str] | None = None) -> AgentProcess:
    home = short_tmpdir()
    config = home / "config" / "credential-agent"
    config.mkdir(parents=True)
    (config / "config.toml").write_text(rules)
    a = AgentProcess(home=home, env=env).start()
    a.init_passphrase()
    with a.client() as c:
        for name in ("openai", "aws", "huggingface", "runpod"):
            c.store(name, f"{name}-secret-value", validate=False)
    return a


def python_env(a: AgentProcess) -> dict[str, str]:
    """The agent's environment for a Python caller that imports this checkout's client."""
    site = sysconfig.get_paths()["purelib"]
    return {**a.env, "PYTHONPATH": f"{ROOT}:{site}", "PYTHONHOME": sys.base_prefix}


@pytest.fixture(scope="module")
def other_python() -> Iterator[str]:
    """A second Python executable: a copy of this one at another path, so the kernel
    names it differently (/proc/PID/exe)."""
    where = short_tmpdir("py-")
    copy = where / "python3.11"
    shutil.copy2(REAL_PYTHON, copy)
    yield str(copy)
    shutil.rmtree(where, ignore_errors=True)


def run(a: AgentProcess, argv: list[str], *names: str, cwd: Path | None = None) -> dict[str, str]:
    done = subprocess.run([*argv, *names], env=python_env(a), capture_output=True, text=True, timeout=60, cwd=cwd)
    assert done.returncode == 0, done.stderr
    return {line.split(" ", 1)[0]: line.split(" ", 1)[1] for line in done.stdout.splitlines()}


def test_a_deny_rule_names_itself_and_the_agent_goes_on(tmp_path: Path) -> None:
    a = with_rules('[access."openai"]\nrule = "deny"\n')
    try:
        with a.client() as c:
            with pytest.raises(errors.Denied, match=r'openai/api-key may not be read by .*python.*\[access."openai"\]'):
                c.get("openai")
            with pytest.raises(errors.Denied):
                c.history_value("openai", 1)
            assert c.get("runpod") == "runpod-secret-value"  # no rule: read as always
            assert "openai" in [e["platform"] for e in c.list()]  # names are not restricted
            status = c.status()
            assert status["access_rules"] == 1 and status["approvals_pending"] == 0
        cli = a.cli("get", "openai")
        assert cli.returncode == 1 and cli.stderr.startswith("agent: openai/api-key may not be read by ")
        assert "openai-secret-value" not in cli.stdout + cli.stderr + a.log()

        def denied_rows() -> list[dict[str, object]]:
            with a.client() as c:
                return [r for r in c.audit(platform="openai") if r["result"] == "denied"]

        until(lambda: len(denied_rows()) >= 1, 10, "the denials in the audit log")
    finally:
        a.cleanup()


def test_only_an_executable_reads_and_a_forged_argv0_does_not(other_python: str) -> None:
    a = with_rules(f'[access."aws*"]\nrule = "deny"\nonly = ["{other_python}"]\n')
    try:
        assert run(a, [other_python, "-c", READ], "aws", "runpod") == {
            "aws": "aws-secret-value", "runpod": "runpod-secret-value"}
        assert run(a, [REAL_PYTHON, "-c", READ], "aws")["aws"].startswith("Denied aws/api-key may not be read")
        # argv[0] says it is the allowed program; the kernel says which executable runs
        forged = ["bash", "-c", f'exec -a "{other_python}" "{REAL_PYTHON}" "$@"', "forged", "-c", READ]
        assert run(a, forged, "aws")["aws"].startswith("Denied")
        with a.client() as c, pytest.raises(errors.Denied):
            c.get("aws")  # this test's own process: another executable
    finally:
        a.cleanup()


def test_only_a_script_reads(tmp_path: Path) -> None:
    train, other = tmp_path / "train.py", tmp_path / "other.py"
    train.write_text(READ)
    other.write_text(READ)
    a = with_rules(f'[access."huggingface"]\nonly = ["{train}"]\n')
    try:
        assert run(a, [REAL_PYTHON, str(train)], "huggingface")["huggingface"] == "huggingface-secret-value"
        # a relative path is the same script: the agent resolves it against the caller's directory
        assert run(a, [REAL_PYTHON, "train.py"], "huggingface", cwd=tmp_path)["huggingface"] == (
            "huggingface-secret-value")
        assert run(a, [REAL_PYTHON, str(other)], "huggingface")["huggingface"].startswith("Denied")
        assert run(a, [REAL_PYTHON, "-c", READ], "huggingface")["huggingface"].startswith("Denied")
    finally:
        a.cleanup()


def test_no_answer_in_time_is_a_denial() -> None:
    a = with_rules('[access."openai"]\nrule = "confirm"\n', env={"CREDENTIAL_AGENT_CONFIRM_TIMEOUT": "1"})
    try:
        with a.client() as c:
            with pytest.raises(errors.Denied, match=r"needs approval .*none came within 1 s: run `agent approve`"):
                c.get("openai")
            assert c.approvals() == []  # nothing is left waiting
            assert c.get("runpod") == "runpod-secret-value"
    finally:
        a.cleanup()


def pending(a: AgentProcess, n: int = 1) -> list[dict[str, object]]:
    def ready() -> list[dict[str, object]] | None:
        with a.client() as c:
            waiting = c.approvals()
        return waiting if len(waiting) >= n else None

    found: list[dict[str, object]] = until(ready, 20, "a read waiting for approval")
    return found


def test_agent_approve_lets_one_process_read_and_remembers_it(tmp_path: Path) -> None:
    a = with_rules('[access."openai"]\nrule = "confirm"\n')
    script = tmp_path / "eval.py"
    script.write_text(READ)
    try:
        out: dict[str, dict[str, str]] = {}
        reader = threading.Thread(target=lambda: out.update(first=run(a, [REAL_PYTHON, str(script)], "openai",
                                                                       "openai")))
        reader.start()
        [request] = pending(a)
        assert (request["platform"], request["exe"], request["caller"]) == ("openai", REAL_PYTHON, str(script))
        shown = a.cli("approve")  # not at a terminal: it lists, it does not approve
        assert f"request {request['id']}: {REAL_PYTHON} ({script}), pid {request['pid']}, asks for openai/api-key" in (
            shown.stdout)
        # the asking program's way round it: approving without the secret
        with a.client() as c:
            with pytest.raises(errors.BadPassphrase, match="passphrase"):
                c.approve(int(str(request["id"])))
            with pytest.raises(errors.BadPassphrase):
                c.approve(int(str(request["id"])), "not the passphrase")
        approved = a.cli("approve", str(request["id"]), input=PASSPHRASE + "\n")
        assert approved.returncode == 0, approved.stderr
        assert approved.stdout == f"approved request {request['id']} (for this process)\n"
        reader.join(30)
        # the second read of the same process needed no second approval
        assert out["first"] == {"openai": "openai-secret-value"}
        assert len(out["first"]) == 1 and not reader.is_alive()
        # another process asks again, and a denial needs no secret
        second: dict[str, dict[str, str]] = {}
        again = threading.Thread(target=lambda: second.update(r=run(a, [REAL_PYTHON, str(script)], "openai")))
        again.start()
        [request] = pending(a)
        denied = a.cli("approve", str(request["id"]), "--deny")
        assert denied.returncode == 0 and denied.stdout == f"denied request {request['id']}\n"
        again.join(30)
        assert second["r"]["openai"] == "Denied reading openai/api-key was denied by the user"
        with a.client() as c:
            rows = c.audit()
        ops = [(r["op"], r["result"]) for r in rows]
        assert ("approve", "ok") in ops and ("approve", "bad_passphrase") in ops
        assert ("get", "ok") in ops and ("get", "denied") in ops
    finally:
        a.cleanup()


def test_a_keystore_vault_approves_with_its_pin(secret_service: SecretService) -> None:
    home = short_tmpdir()
    (home / "config" / "credential-agent").mkdir(parents=True)
    (home / "config" / "credential-agent" / "config.toml").write_text('[access."openai"]\nrule = "confirm"\n')
    a = AgentProcess(home=home, env=secret_service.env).start()
    try:
        with a.client(timeout=30) as c:
            c.init("keyring")
            c.store("openai", "sk-from-keyring-vault", validate=False)
            assert c.status()["approval_pin"] is False
            result: list[object] = []
            t = threading.Thread(target=lambda: result.append(_get_or_error(a, "openai")))
            t.start()
            [request] = pending(a)
            with pytest.raises(errors.BadPassphrase, match=r"no approval PIN yet.*agent approve --set-pin"):
                c.approve(int(str(request["id"])), "1234")
            c.approval_pin("4321-pin")
            with pytest.raises(errors.BadPassphrase, match="not this vault's approval PIN"):
                c.approval_pin("9999-new", "wrong")  # replacing it needs the current one
            with pytest.raises(errors.BadPassphrase, match="not this vault's approval PIN"):
                c.approve(int(str(request["id"])), "1234")
            assert c.approve(int(str(request["id"])), "4321-pin", remember="once")["answer"] == "approved"
            t.join(30)
            assert result == ["sk-from-keyring-vault"]
            assert c.status()["approval_pin"] is True
        assert "4321-pin" not in a.log()
    finally:
        a.cleanup()


def _get_or_error(a: AgentProcess, name: str) -> object:
    try:
        with a.client(timeout=30) as c:
            return c.get(name)
    except errors.AgentError as e:
        return e


def test_bad_rules_are_one_line_at_start() -> None:
    home = short_tmpdir()
    (home / "config" / "credential-agent").mkdir(parents=True)
    (home / "config" / "credential-agent" / "config.toml").write_text('[access."openai"]\nrule = "ask"\n')
    a = AgentProcess(home=home)
    try:
        started = a.cli("start")
        assert started.returncode != 0
        assert "[access.\"openai\"]: 'rule' must be one of allow, confirm, deny, got 'ask'" in started.stderr
        assert "Traceback" not in started.stderr
    finally:
        a.cleanup()


def test_ls_show_and_status_say_which_rule_holds() -> None:
    a = with_rules('[access."openai"]\nrule = "confirm"\n[access."aws*"]\nonly = ["/usr/local/bin/aws"]\n')
    try:
        ls = a.cli("ls")
        head, *rows = ls.stdout.splitlines()
        assert head.split()[-1] == "ACCESS"
        marks = {row.split()[0]: row.split()[-1] for row in rows}
        assert marks == {"aws": "only+deny", "huggingface": "-", "openai": "confirm", "runpod": "-"}
        show = a.cli("show", "aws")
        assert 'access:    deny ([access."aws*"]; only /usr/local/bin/aws)' in show.stdout
        status = a.cli("status")
        assert "access:      2 rules; 0 read(s) waiting for `agent approve`" in status.stdout
    finally:
        a.cleanup()


def test_no_side_door_the_original_api_and_the_keyring_backend_obey_the_rules() -> None:
    a = with_rules('[access."openai"]\nrule = "deny"\n[access."keyring-*"]\nrule = "deny"\n')
    try:
        code = (
            "from client import CredentialService\n"
            "print(repr(CredentialService().get_credential('openai')))\n"
            "print(repr(CredentialService().get_credential('runpod')))\n"
        )
        done = subprocess.run([REAL_PYTHON, "-c", code], env=python_env(a), capture_output=True, text=True, timeout=60)
        assert done.stdout.splitlines() == ["None", "'runpod-secret-value'"], done.stderr
        kr = (
            "import keyring\n"
            "from client.keyring_backend import AgentKeyring\n"
            "keyring.set_keyring(AgentKeyring())\n"
            "keyring.set_password('pypi.example.org', 'me', 'kr-secret')  # a write: no rule on writes\n"
            "try:\n    print(keyring.get_password('pypi.example.org', 'me'))\n"
            "except Exception as e:\n    print(type(e).__name__, e)\n"
        )
        done = subprocess.run([REAL_PYTHON, "-c", kr], env=python_env(a), capture_output=True, text=True, timeout=60)
        assert done.stdout.startswith("KeyringError keyring-") and "may not be read by" in done.stdout, done.stdout
        assert "kr-secret" not in done.stdout
    finally:
        a.cleanup()


def test_agent_approve_at_a_second_terminal_shows_the_request_and_asks_hidden(tmp_path: Path) -> None:
    a = with_rules('[access."openai"]\nrule = "confirm"\n', env={"CREDENTIAL_AGENT_CONFIRM_TIMEOUT": "20"})
    script = tmp_path / "job.py"
    script.write_text(READ)
    try:
        out: dict[str, dict[str, str]] = {}
        job = threading.Thread(target=lambda: out.update(r=run(a, [REAL_PYTHON, str(script)], "openai")))
        job.start()
        pending(a)
        t = a.terminal("approve", "--remember", "program")
        shown = t.expect("Passphrase or approval PIN (to approve): ")
        assert f"{REAL_PYTHON} ({script})" in shown and "asks for openai/api-key" in shown
        t.answer("", PASSPHRASE)
        assert t.wait() == 0, t.output
        assert "approved request" in t.output and "(for this program)" in t.output
        assert PASSPHRASE not in t.output  # typed hidden
        job.join(30)
        assert out["r"] == {"openai": "openai-secret-value"}
        # the same program, another process: remembered
        assert run(a, [REAL_PYTHON, str(script)], "openai") == {"openai": "openai-secret-value"}
    finally:
        a.cleanup()


def test_a_rename_does_not_read_around_a_rule() -> None:
    a = with_rules(f'[access."openai*"]\nrule = "deny"\n[access."team-*"]\nonly = ["{REAL_PYTHON}"]\n')
    try:
        with a.client() as c:
            with pytest.raises(errors.Denied, match="may not be read"):
                c.rename("openai", "zz-leak")  # as a get of it would be
            with pytest.raises(errors.NotFound):
                c.get("zz-leak")  # nothing moved
            c.store("runpod-2", "under no rule", validate=False)
            c.rename("runpod-2", "team-x")  # into a rule is fine (this process may read it there)
            assert c.get("team-x") == "under no rule"
            with pytest.raises(errors.Denied, match=r'out from under \[access."team-\*"\]'):
                c.rename("team-x", "runpod-3")  # out of one is not: anyone could read it there
            c.rename("team-x", "team-y")  # within it, as before
        out = a.cli("mv", "openai", "openai-old")  # within the same rule: a deny still cannot move it
        assert out.returncode == 1 and "may not be read" in out.stderr
    finally:
        a.cleanup()


def test_rules_name_platforms_as_the_vault_does() -> None:
    from agent import access
    from agent.transport import Peer

    rules = access.parse({"HF": {"rule": "deny"}, "wandb*": {"rule": "confirm"}, "*/API-Secret": {"rule": "deny"}},
                         "config.toml")
    nobody = Peer(1, 0, 0, "/usr/bin/python3")
    assert access.decide(rules, ("huggingface", "api-key"), nobody)[0] == "deny"  # an alias is its platform
    assert access.decide(rules, ("wandb", "api-key"), nobody)[0] == "confirm"
    assert access.decide(rules, ("runpod", "api-secret"), nobody)[0] == "deny"
    glob = access.parse({"hf*": {"rule": "deny"}}, "config.toml")
    assert access.decide(glob, ("huggingface", "api-key"), nobody)[0] == "deny"  # through the alias hf


@pytest.mark.skipif(shutil.which("unshare") is None, reason="unshare (util-linux) is not installed")
def test_a_bind_mount_over_the_listed_program_is_not_that_program(tmp_path: Path) -> None:
    tool = tmp_path / "awstool"
    shutil.copy2("/bin/sleep", tool)
    a = with_rules(f'[access."aws"]\nrule = "deny"\nonly = ["{tool}"]\n')
    try:
        script = tmp_path / "read.py"
        script.write_text(READ)
        probe = subprocess.run(["unshare", "-m", "true"], capture_output=True)
        if probe.returncode != 0:
            pytest.skip("mount namespaces are not available to this user here")
        # in its own mount namespace the attacker puts the interpreter at the listed path
        inner = f"mount --bind {REAL_PYTHON} {tool} && exec {tool} {script} aws"
        done = subprocess.run(["unshare", "-m", "sh", "-c", inner], env=python_env(a), capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert lines_of(done.stdout)["aws"].startswith("Denied aws/api-key may not be read")
    finally:
        a.cleanup()


def lines_of(text: str) -> dict[str, str]:
    return {line.split(" ", 1)[0]: line.split(" ", 1)[1] for line in text.splitlines()}


def test_one_process_cannot_fill_the_approval_queue() -> None:
    a = with_rules('[access."openai"]\nrule = "confirm"\n', env={"CREDENTIAL_AGENT_CONFIRM_TIMEOUT": "8"})
    try:
        results: list[object] = []
        threads = [threading.Thread(target=lambda: results.append(_get_or_error(a, "openai"))) for _ in range(4)]
        for t in threads:
            t.start()
        pending(a, 4)
        with a.client() as c, pytest.raises(errors.Denied, match="has 4 reads waiting for approval already"):
            c.get("openai")  # the fifth read of this process is refused at once
        for t in threads:
            t.join(30)
        assert all(isinstance(r, errors.Denied) for r in results)
    finally:
        a.cleanup()


def test_wrong_pins_are_counted_in_the_vault_and_approve_is_no_oracle(secret_service: SecretService) -> None:
    a = AgentProcess(env=secret_service.env).start()
    try:
        with a.client(timeout=60) as c:
            c.init("keyring")
            c.approval_pin("the right pin")
            with pytest.raises(errors.NotFound):
                c.approve(10**9, "the right pin")  # no such request: the secret is not even tried
            for guess in ("guess one", "guess two"):
                with pytest.raises(errors.BadPassphrase):
                    c.recovery_code(guess)
            assert c.status()["approval_pin_failures"] == 2
        a.stop()
        a.start()  # a restart resets nothing
        with a.client(timeout=60) as c:
            assert c.status()["approval_pin_failures"] == 2
            assert c.recovery_code("the right pin")
            assert c.status()["approval_pin_failures"] == 0
    finally:
        a.cleanup()
