"""`agent import`, `agent export`, `agent exec`, the migration API and the errors
people hit, against real `agent serve` processes."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from client import Client, CredentialMigrationTool, CredentialService, migrate
from support import AgentProcess, running_agent

HF = "hf_" + "CanaryHf" * 4
WB = "CanaryWb" * 5  # 40 characters
RP = "rp_" + "CanaryRp" * 3
LL = "ll_" + "CanaryLl" * 3
SECRETS = (HF, WB, RP, LL)
OK, ERROR, USAGE, LOCKED, NO_AGENT = 0, 1, 2, 3, 4
RUNPOD_RULE = ("RunPod keys are at least 20 characters long (rule runpod); "
               "to store it anyway: --no-validate (validate=False from Python)")


def write(a: AgentProcess, name: str, text: str) -> str:
    path = a.home / name
    path.write_text(text)
    return str(path)


def stored(a: AgentProcess) -> dict[tuple[str, str], str]:
    with a.client() as c:
        return {(e["platform"], e["credential_type"]): c.get(e["platform"], e["credential_type"]) for e in c.list()}


def summary(done: subprocess.CompletedProcess[str]) -> dict[str, tuple[str, str | None]]:
    """{name: (status, reason)} from `--json` output."""
    return {i["name"]: (i["status"], i["reason"]) for i in json.loads(done.stdout)["items"]}


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        for secret in SECRETS:
            assert secret not in text
            assert secret[4:20] not in text  # nor a piece of one


# --- import json -----------------------------------------------------------------------
def test_import_json_every_shape(unlocked_agent: AgentProcess) -> None:
    a = unlocked_agent
    flat = write(a, "flat.json", json.dumps({"huggingface": HF}))
    nested = write(a, "nested.json", json.dumps({
        "wandb": {"api_key": WB, "metadata": {"team": "ml"}},
        "runpod": {"credential_value": RP, "credential_type": "token"},
        "lambdalabs": {"value": LL},
        "hf-read": {"token": HF},
    }))
    listed = write(a, "list.json", json.dumps([{"platform": "vastai", "api_key": "v" * 24},
                                               {"platform": "openai", "token": "sk-1"}]))
    for path in (flat, nested, listed):
        done = a.cli("import", "json", path)
        assert done.returncode == OK, done.stdout + done.stderr
    assert stored(a) == {
        ("huggingface", "api-key"): HF, ("wandb", "api-key"): WB, ("runpod", "token"): RP,
        ("lambdalabs", "api-key"): LL, ("hf-read", "api-key"): HF, ("vastai", "api-key"): "v" * 24,
        ("openai", "api-key"): "sk-1",
    }
    with a.client() as c:
        assert c.metadata("wandb")["metadata"] == {"team": "ml"}
    assert "imported  runpod (type token)" in a.cli("import", "json", nested, "--dry-run").stdout.replace(
        "replaced", "imported")


def test_an_import_of_thousands_lands_every_record(unlocked_agent: AgentProcess) -> None:
    """Stored over many connections at once, and committed in groups: every record lands,
    the last record of a name wins as if they were sent one by one, and a record the agent
    refuses fails alone."""
    a = unlocked_agent
    n = 3_000
    records: list[dict[str, Any]] = [
        {"platform": f"svc{i:05d}", "api_key": f"value-{i}", "metadata": {"i": i}} for i in range(n)
    ]
    for i in range(0, n, 97):  # the same names again, later: these values win
        records.append({"platform": f"svc{i:05d}", "api_key": f"again-{i}"})
    refused = ("huggingface", "wandb", "runpod", "lambdalabs", "vastai")
    for platform in refused:  # values their platforms' rules refuse: the agent says so, per record
        records.append({"platform": platform, "api_key": "nope"})
    done = a.cli("import", "json", write(a, "many.json", json.dumps(records)), "--json", timeout=120)
    assert done.returncode == ERROR, done.stderr  # the refused ones
    report = json.loads(done.stdout)
    again, bad = len(range(0, n, 97)), len(refused)
    assert report["counts"] == {"imported": n, "replaced": again, "skipped": 0, "failed": bad, "exported": 0}
    assert [i["status"] for i in report["items"][-bad:]] == ["failed"] * bad
    expected = {f"svc{i:05d}": f"again-{i}" if i % 97 == 0 else f"value-{i}" for i in range(n)}
    with a.client() as c:
        assert dict(zip(expected, c.get_many(list(expected)), strict=True)) == expected
        assert c.metadata("svc00097")["metadata"] == {"i": 97}  # kept when the value was replaced
        assert len(c.list()) == n
        st = c.status()
    assert st["writes_committed"] == n + again
    assert st["largest_write_group"] > 1, "no two writes ever shared a transaction"


def test_import_json_reports_each_item_and_goes_on(unlocked_agent: AgentProcess) -> None:
    a = unlocked_agent
    with a.client() as c:
        c.store("wandb", WB)
    path = write(a, "creds.json", json.dumps({
        "huggingface": HF,           # imported
        "wandb": {"api_key": WB},    # replaced
        "runpod": "short",           # failed: the RunPod rule
        "bad name": RP,              # failed: the name
        "lambdalabs": None,          # skipped
        "vastai": 42,                # failed: not a string
        "openai": {"token": "sk-x"},  # imported, after the failures
    }))
    done = a.cli("import", "json", path, "--json")
    assert done.returncode == ERROR
    items = summary(done)
    assert items == {
        "huggingface": ("imported", None),
        "wandb": ("replaced", None),
        "runpod": ("failed", RUNPOD_RULE),
        "entry 4": ("failed", "\"bad name\": invalid platform name: use 1 to 64 ASCII letters, digits, '-' or '_'"),
        "lambdalabs": ("skipped", "no value (null)"),
        "vastai": ("failed", "must be a string or an object"),
        "openai": ("imported", None),
    }
    assert json.loads(done.stdout)["counts"] == {"imported": 2, "replaced": 1, "skipped": 1, "failed": 3,
                                                 "exported": 0}
    assert set(stored(a)) == {("huggingface", "api-key"), ("wandb", "api-key"), ("openai", "api-key")}
    text = a.cli("import", "json", path)
    assert text.returncode == ERROR
    assert f"failed    runpod: {RUNPOD_RULE}" in text.stdout
    assert "7 items: 3 replaced, 1 skipped, 3 failed" in text.stdout
    assert_no_secret(done.stdout, done.stderr, text.stdout, text.stderr, a.log())


def test_import_json_validation_rule_and_no_validate(unlocked_agent: AgentProcess) -> None:
    a = unlocked_agent
    path = write(a, "c.json", json.dumps({"huggingface": "no-prefix-token"}))
    done = a.cli("import", "json", path)
    assert done.returncode == ERROR
    assert "Hugging Face tokens start with 'hf_'" in done.stdout
    assert a.cli("import", "json", path, "--no-validate").returncode == OK
    assert stored(a) == {("huggingface", "api-key"): "no-prefix-token"}


def test_import_json_no_replace_and_dry_run(unlocked_agent: AgentProcess) -> None:
    a = unlocked_agent
    with a.client() as c:
        c.store("wandb", WB)
    path = write(a, "c.json", json.dumps({"wandb": "x" * 40, "huggingface": HF, "runpod": "bad"}))
    dry = a.cli("import", "json", path, "--dry-run", "--json")
    assert summary(dry) == {"wandb": ("replaced", None), "huggingface": ("imported", None),
                            "runpod": ("failed", RUNPOD_RULE)}
    assert json.loads(dry.stdout)["dry_run"] is True
    assert stored(a) == {("wandb", "api-key"): WB}
    kept = a.cli("import", "json", path, "--no-replace", "--json")
    assert summary(kept)["wandb"] == ("skipped", "already stored; kept (--no-replace)")
    assert stored(a) == {("wandb", "api-key"): WB, ("huggingface", "api-key"): HF}


MALFORMED = [
    ('{"huggingface": "' + HF + '",\n "wandb": "' + WB + '",}', "line 2, column 54"),
    ('{"huggingface": "' + HF + '"\n "wandb": "' + WB + '"}', "line 2, column 2"),
    ('[{"platform": "huggingface", "api_key": "' + HF + '"}', "line 1, column 79"),
    ('{"huggingface": "' + HF + '"} trailing', "line 1, column 56"),
    ("{'huggingface': '" + HF + "'}", "line 1, column 2"),
]


@pytest.mark.parametrize(("text", "where"), MALFORMED)
def test_malformed_json_stores_nothing(unlocked_agent: AgentProcess, text: str, where: str) -> None:
    a = unlocked_agent
    done = a.cli("import", "json", write(a, "bad.json", text))
    assert done.returncode == ERROR
    assert where in done.stderr and "nothing was imported" in done.stderr
    assert done.stdout == ""
    assert stored(a) == {}
    assert_no_secret(done.stdout, done.stderr)


@pytest.mark.parametrize(("content", "words"), [
    (b"", "is empty"),
    (b"\n  \n", "is empty"),
    (b'{"huggingface": "hf_caf\xe9"}', "not UTF-8 text"),
    (b'"just a string"', "must be an object"),
    (b"42", "must be an object"),
    (b"[" * 50_000 + b"]" * 50_000, "nested too deeply"),
])
def test_import_json_refuses_bad_files(unlocked_agent: AgentProcess, content: bytes, words: str) -> None:
    a = unlocked_agent
    path = a.home / "bad.json"
    path.write_bytes(content)
    done = a.cli("import", "json", str(path))
    assert done.returncode == ERROR and words in done.stderr, done.stderr
    assert stored(a) == {}


def test_import_unreadable_files(unlocked_agent: AgentProcess) -> None:
    a = unlocked_agent
    for args, words in ((("json", str(a.home / "missing.json")), "No such file or directory"),
                        (("dotenv", str(a.home)), "Is a directory")):
        done = a.cli("import", *args)
        assert done.returncode == ERROR
        assert done.stderr.startswith("agent: cannot read") and words in done.stderr
    if os.geteuid() != 0:  # root reads any file
        path = a.home / "locked.json"
        path.write_text("{}")
        path.chmod(0)
        done = a.cli("import", "json", str(path))
        assert done.returncode == ERROR and "Permission denied" in done.stderr


def test_import_json_from_stdin(unlocked_agent: AgentProcess) -> None:
    a = unlocked_agent
    done = a.cli("import", "json", "-", input=json.dumps({"huggingface": HF}))
    assert done.returncode == OK, done.stderr
    assert stored(a) == {("huggingface", "api-key"): HF}
    empty = a.cli("import", "json", "-", input="")
    assert empty.returncode == ERROR and "stdin is empty" in empty.stderr


# --- import env / dotenv -------------------------------------------------------------
def test_import_env_pairs(unlocked_agent: AgentProcess) -> None:
    a = unlocked_agent
    env = {"MY_HF": HF, "WANDB_API_KEY": WB, "EMPTY_VAR": ""}
    done = a.cli("import", "env", "huggingface=MY_HF", "wandb=WANDB_API_KEY", "runpod=NOT_SET", "vastai=EMPTY_VAR",
                 "--json", env=env)
    assert done.returncode == ERROR
    assert summary(done) == {"huggingface": ("imported", None), "wandb": ("imported", None),
                             "runpod": ("failed", "NOT_SET is not set"), "vastai": ("failed", "EMPTY_VAR is empty")}
    assert stored(a) == {("huggingface", "api-key"): HF, ("wandb", "api-key"): WB}
    with a.client() as c:
        assert c.metadata("huggingface")["metadata"] == {"source": "env:MY_HF"}
    assert_no_secret(done.stdout, done.stderr)


def test_import_env_known_variables(unlocked_agent: AgentProcess) -> None:
    a = unlocked_agent
    done = a.cli("import", "env", env={"HF_TOKEN": HF, "RUNPOD_API_KEY": RP})
    assert done.returncode == OK
    assert "imported  huggingface from HF_TOKEN" in done.stdout
    assert "imported  runpod from RUNPOD_API_KEY" in done.stdout
    assert stored(a) == {("huggingface", "api-key"): HF, ("runpod", "api-key"): RP}
    none = a.cli("import", "env")
    assert none.returncode == OK and "no known key variable is set" in none.stderr


@pytest.mark.parametrize(("args", "words"), [
    (("huggingface",), "expected PLATFORM=VAR"),
    (("huggingface=",), "expected PLATFORM=VAR"),
    (("bad name=HF_TOKEN",), "invalid platform name"),
    (("huggingface=1VAR",), "invalid variable name"),
])
def test_import_env_usage_errors(unlocked_agent: AgentProcess, args: tuple[str, ...], words: str) -> None:
    done = unlocked_agent.cli("import", "env", *args)
    assert done.returncode == USAGE and words in done.stderr


def test_import_dotenv(unlocked_agent: AgentProcess) -> None:
    a = unlocked_agent
    path = write(a, ".env", f"# training\nexport HF_TOKEN={HF}\nWANDB_API_KEY='{WB}'\nDATABASE_URL=postgres://x\n"
                            f'TEAM_LAMBDA="{LL}"\nRUNPOD_API_KEY=\n')
    done = a.cli("import", "dotenv", path, "--map", "TEAM_LAMBDA=lambdalabs", "--json")
    assert done.returncode == OK, done.stderr
    assert summary(done) == {
        "lambdalabs": ("imported", None), "huggingface": ("imported", None), "wandb": ("imported", None),
        "runpod": ("skipped", "RUNPOD_API_KEY is empty"),
        "DATABASE_URL": ("skipped", "not a known key variable; map it with --map DATABASE_URL=PLATFORM"),
    }
    assert stored(a) == {("huggingface", "api-key"): HF, ("wandb", "api-key"): WB, ("lambdalabs", "api-key"): LL}
    with a.client() as c:
        assert c.metadata("wandb")["metadata"] == {"source": f"dotenv:{Path(path).resolve()}:WANDB_API_KEY"}
    assert_no_secret(done.stdout, done.stderr)


def test_dotenv_never_echoes_a_name_that_may_be_a_key(unlocked_agent: AgentProcess) -> None:
    a = unlocked_agent
    pasted = "c2stbGl2ZS0xMjM0NTY3ODkwYWJjZGVm"  # a base64 key pasted on its own line, '=' padded
    path = write(a, ".env", f"HF_TOKEN={HF}\n{pasted}=\nlower_case_name=x\n")
    done = a.cli("import", "dotenv", path, "--json")
    assert done.returncode == OK, done.stderr
    plain = a.cli("import", "dotenv", path, "--dry-run")
    for out in (done.stdout, done.stderr, plain.stdout, plain.stderr):
        assert pasted not in out and "lower_case_name" not in out
    assert "line 2" in plain.stdout and "name not shown" in plain.stdout


@pytest.mark.parametrize(("text", "words"), [
    (f"HF_TOKEN={HF}\n{RP}\n", "line 2: expected NAME=VALUE"),
    (f"HF_TOKEN={HF}\nWANDB_API_KEY=\"{WB}\n", "line 2: the \" quote is never closed"),
    (f"HF_TOKEN='{HF}' extra\n", "line 1: unexpected text after the closing quote"),
])
def test_malformed_dotenv_stores_nothing(unlocked_agent: AgentProcess, text: str, words: str) -> None:
    a = unlocked_agent
    done = a.cli("import", "dotenv", write(a, ".env", text))
    assert done.returncode == ERROR and words in done.stderr and "nothing was imported" in done.stderr
    assert stored(a) == {}
    assert_no_secret(done.stdout, done.stderr)


def test_import_dotenv_map_usage_and_missing(unlocked_agent: AgentProcess) -> None:
    a = unlocked_agent
    path = write(a, ".env", f"HF_TOKEN={HF}\n")
    assert a.cli("import", "dotenv", path, "--map", "HF_TOKEN").returncode == USAGE
    assert a.cli("import", "dotenv", path, "--map", "HF_TOKEN=bad name").returncode == USAGE
    done = a.cli("import", "dotenv", path, "--map", "MISSING=runpod")
    assert done.returncode == ERROR and "failed    runpod from MISSING: MISSING is not set" in done.stdout
    assert stored(a) == {("huggingface", "api-key"): HF}


# --- export --------------------------------------------------------------------------
def fill(a: AgentProcess) -> None:
    with a.client() as c:
        c.store("huggingface", HF, metadata={"owner": "alice"})
        c.store("wandb", WB)
        c.store("runpod", RP, "token", expires_at=1924992000.0)


def test_export_without_values(unlocked_agent: AgentProcess) -> None:
    a = unlocked_agent
    fill(a)
    out = a.home / "export.json"
    out.write_text("old contents")
    out.chmod(0o644)
    done = subprocess.run(["sh", "-c", 'umask 000; exec "$@"', "sh", *a.command("export", str(out), "--force")],
                          env=a.env, capture_output=True, text=True, timeout=30)
    assert done.returncode == OK, done.stderr
    assert "wrote 3 credentials" in done.stdout and "no values" in done.stdout
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert sorted(p.name for p in a.home.iterdir() if p.name.startswith(".export")) == []  # no temp file left
    data = json.loads(out.read_text())
    assert set(data) == {"huggingface", "wandb", "runpod:token"}
    assert data["huggingface"]["metadata"] == {"owner": "alice"}
    assert data["runpod:token"]["expires_at"] == "2031-01-01T00:00:00+00:00"
    assert all("value" not in r for r in data.values())
    assert_no_secret(out.read_text(), done.stdout, done.stderr)
    js = a.cli("export", str(out), "--json", "--force")
    assert json.loads(js.stdout)["counts"]["exported"] == 3 and js.stderr == ""


def test_export_with_values_round_trips(unlocked_agent: AgentProcess) -> None:
    a = unlocked_agent
    fill(a)
    out = a.home / "export.json"
    done = a.cli("export", str(out), "--include-values")
    assert done.returncode == OK
    assert "warning:" in done.stderr and "plain text" in done.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    with running_agent() as b:
        b.init_passphrase()
        back = b.cli("import", "json", str(out), "--json")
        assert back.returncode == OK, back.stderr
        assert stored(b) == stored(a)
        with b.client() as c:
            assert c.metadata("huggingface")["metadata"] == {"owner": "alice"}
            assert c.metadata("runpod", "token")["expires_at"] == 1924992000.0
    stdout = a.cli("export", "-", "--include-values")
    assert json.loads(stdout.stdout)["wandb"]["value"] == WB and "warning:" in stdout.stderr
    assert a.cli("export", "-", "--json").returncode == USAGE


def test_export_errors(unlocked_agent: AgentProcess) -> None:
    a = unlocked_agent
    fill(a)
    done = a.cli("export", str(a.home / "no" / "such" / "dir.json"))
    assert done.returncode == ERROR and "cannot write" in done.stderr and "No such file" in done.stderr
    done = a.cli("export", str(a.home))
    assert done.returncode == ERROR and "already exists" in done.stderr
    done = a.cli("export", str(a.home), "--force")
    assert done.returncode == ERROR and "cannot write" in done.stderr
    assert sorted(p.name for p in a.home.iterdir() if p.name.endswith(".tmp")) == []


def test_export_and_import_when_locked(unlocked_agent: AgentProcess) -> None:
    a = unlocked_agent
    fill(a)
    with a.client() as c:
        c.lock()
    path = write(a, "c.json", json.dumps({"openai": "sk-123"}))
    for args in (("export", str(a.home / "e.json")), ("import", "json", path), ("show", "wandb"),
                 ("get", "wandb")):
        done = a.cli(*args)
        assert done.returncode == LOCKED, (args, done.stderr)
        assert "agent unlock" in done.stderr
    assert not (a.home / "e.json").exists()
    a.cli("unlock", input="correct horse battery staple\n")
    assert ("openai", "api-key") not in stored(a)


# --- exec ----------------------------------------------------------------------------
def test_exec_sets_variables_and_returns_the_exit_code(unlocked_agent: AgentProcess) -> None:
    a = unlocked_agent
    fill(a)
    script = ("import os, sys; print(os.environ['HF_TOKEN'] == sys.argv[1], os.environ['W'] == sys.argv[2], "
              "os.environ['RP'] == sys.argv[3], os.environ['CREDENTIAL_AGENT_EXEC']); sys.exit(7)")
    done = a.cli("exec", "--platform", "huggingface", "--env", "W=wandb", "--env", "RP=runpod:token", "--",
                 sys.executable, "-c", script, HF, WB, RP)
    assert done.returncode == 7, done.stderr
    assert done.stdout.split() == ["True", "True", "True", "1"]
    wandb = a.cli("exec", "--platform", "wandb", "--", "sh", "-c", 'test "$WANDB_API_KEY" = "$1"', "sh", WB)
    assert wandb.returncode == OK


def test_exec_and_run_nest_and_import_env_inside_them_is_refused(unlocked_agent: AgentProcess) -> None:
    """The inner one adds its keys to the outer one's; `agent import env` inside either
    would take the injected keys for the user's own, so it says so."""
    a = unlocked_agent
    fill(a)
    inner = (f"{sys.executable} -m agent exec --platform wandb -- "
             "sh -c 'test \"$HF_TOKEN\" = \"$1\" && test \"$WANDB_API_KEY\" = \"$2\"' sh \"$0\" \"$1\"")
    nested = a.cli("exec", "--platform", "huggingface", "--", "sh", "-c", inner, HF, WB)
    assert nested.returncode == OK, nested.stderr
    inside = a.cli("exec", "--platform", "huggingface", "--", sys.executable, "-m", "agent", "import", "env")
    assert inside.returncode == ERROR and "holds keys the agent injected, not yours" in inside.stderr


def test_exec_fails_before_the_command_starts(unlocked_agent: AgentProcess) -> None:
    a = unlocked_agent
    fill(a)
    marker = a.home / "ran"
    cmd = ("--", "touch", str(marker))
    missing = a.cli("exec", "--platform", "huggingface", "--env", "X=openai", *cmd)
    assert missing.returncode == ERROR
    assert "no credential openai/api-key" in missing.stderr and "agent set openai" in missing.stderr
    assert "touch was not started" in missing.stderr
    with a.client() as c:
        c.lock()
    locked = a.cli("exec", "--platform", "wandb", *cmd)
    assert locked.returncode == LOCKED and "agent unlock" in locked.stderr
    a.stop()
    gone = a.cli("exec", "--platform", "wandb", *cmd)
    assert gone.returncode == NO_AGENT and "agent start" in gone.stderr
    assert not marker.exists()


@pytest.mark.parametrize(("args", "code", "words"), [
    (("--platform", "wandb"), USAGE, "name the command"),
    (("--platform", "wandb", "--"), USAGE, "name the command"),
    (("--", "true"), USAGE, "name at least one credential"),
    (("--env", "1X=wandb", "--", "true"), USAGE, "invalid variable name"),
    (("--env", "X", "--", "true"), USAGE, "expected VAR=PLATFORM"),
    (("--env", "X=bad name", "--", "true"), USAGE, "invalid platform name"),
    (("--platform", "bad/name", "--", "true"), USAGE, "invalid platform name"),
    (("--env", "HF_TOKEN=wandb", "--platform", "huggingface", "--", "true"), USAGE, "asked for twice"),
    (("--platform", "wandb", "--", "no-such-command-here"), 127, "command not found"),
])
def test_exec_errors(unlocked_agent: AgentProcess, args: tuple[str, ...], code: int, words: str) -> None:
    fill(unlocked_agent)
    done = unlocked_agent.cli("exec", *args)
    assert done.returncode == code and words in done.stderr, done.stderr


# --- everyday errors -------------------------------------------------------------------
def test_no_agent_says_how_and_autostart_starts_one() -> None:
    a = AgentProcess()  # not started
    try:
        for args in (("ls",), ("import", "env", "huggingface=HF"), ("export", str(a.home / "e.json"))):
            done = a.cli(*args, env={"HF": HF})
            assert done.returncode == NO_AGENT
            assert "`agent start`" in done.stderr and "CREDENTIAL_AGENT_NO_AUTOSTART" in done.stderr
        done = a.cli("status")
        assert done.returncode == NO_AGENT and "no agent is running" in done.stdout
        started = a.cli("ls", env={"CREDENTIAL_AGENT_NO_AUTOSTART": "0"})
        assert started.returncode in (OK, ERROR), started.stderr
        assert json.loads(a.cli("status", "--json").stdout)["running"] is True
    finally:
        a.cli("stop")
        a.cleanup()


def test_everyday_errors(unlocked_agent: AgentProcess) -> None:
    a = unlocked_agent
    nf = a.cli("show", "nope")
    assert nf.returncode == ERROR and "no credential nope/api-key" in nf.stderr
    for args in (("show", "bad name"), ("set", "a/b"), ("get", "x", "--type", "a b"), ("rm", "é")):
        bad = a.cli(*args, input=HF + "\n")
        assert bad.returncode == USAGE and "invalid" in bad.stderr and "name" in bad.stderr, args
    rule = a.cli("set", "huggingface", input="not-a-token\n")
    assert rule.returncode == ERROR and "Hugging Face tokens start with 'hf_'" in rule.stderr
    rule = a.cli("set", "wandb", input="short\n")
    assert rule.returncode == ERROR and "40 characters" in rule.stderr
    empty = a.cli("set", "huggingface", input="")
    assert empty.returncode == ERROR and "stdin is empty" in empty.stderr


# --- no value in any output ------------------------------------------------------------
def test_no_value_in_any_output(unlocked_agent: AgentProcess) -> None:
    a = unlocked_agent
    outputs: list[str] = []

    def run(*args: str, **kw: Any) -> None:
        done = a.cli(*args, **kw)
        assert done.returncode in (OK, ERROR), (args, done.stderr)
        outputs.extend((done.stdout, done.stderr))

    js = write(a, "c.json", json.dumps({"huggingface": {"api_key": HF, "metadata": {"o": "a"}}, "runpod": "bad",
                                        "wandb": WB, "hf2": {"token": HF, "value": WB}}))
    dotenv = write(a, ".env", f"RUNPOD_API_KEY={RP}\nLAMBDA_API_KEY={LL}\nOTHER={HF}\n")
    for j in ((), ("--json",)):
        run("import", "json", js, *j)
        run("import", "json", js, "--dry-run", *j)
        run("import", "dotenv", dotenv, *j)
        run("import", "env", "vastai=V", "runpod=R", *j, env={"V": LL, "R": "short"})
        run("import", "env", *j, env={"HF_TOKEN": HF})
        run("export", str(a.home / "e.json"), *j)
        run("ls", *j)
        run("show", "huggingface", *j)
        run("show", "runpod", *j)
        run("status", *j)
    outputs.append((a.home / "e.json").read_text())
    outputs.append(a.log())
    assert set(stored(a).values()) == set(SECRETS)  # they were all there to leak
    assert_no_secret(*outputs)


# --- the Python API ------------------------------------------------------------------------
def tool(a: AgentProcess) -> CredentialMigrationTool:
    return CredentialMigrationTool(CredentialService(a.client()))


def test_migration_tool_json(unlocked_agent: AgentProcess, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    a = unlocked_agent
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"huggingface": HF, "wandb": {"api_key": WB, "metadata": {"t": "x"}},
                                "runpod": "short", "bad name": RP, "lambdalabs": {}}))
    assert tool(a).migrate_from_json(path) == {"huggingface": True, "wandb": True, "runpod": False,
                                                "entry 4": False, "lambdalabs": False}
    listed = tmp_path / "l.json"
    listed.write_text(json.dumps([{"platform": "runpod", "api_key": RP},
                                  {"platform": "runpod", "token": RP, "credential_type": "token"},
                                  {"api_key": LL}]))
    assert tool(a).migrate_from_json(listed) == {"runpod": True, "record 3": False}
    assert stored(a)[("runpod", "token")] == RP
    path.write_text('{"huggingface": "' + HF + '",')
    assert tool(a).migrate_from_json(path) == {}
    assert "line 1, column" in caplog.text
    assert tool(a).migrate_from_json(tmp_path / "missing.json") == {}
    assert_no_secret(caplog.text)


def test_migration_tool_env_and_export(unlocked_agent: AgentProcess, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    a = unlocked_agent
    monkeypatch.setenv("MY_HF", HF)
    monkeypatch.delenv("NOT_SET_ANYWHERE", raising=False)
    assert tool(a).migrate_from_env({"huggingface": "MY_HF", "wandb": "NOT_SET_ANYWHERE"}) == {
        "huggingface": True, "wandb": False}
    out = tmp_path / "e.json"
    assert tool(a).export_to_json(out) is True
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert "value" not in json.loads(out.read_text())["huggingface"]
    assert tool(a).export_to_json(out, include_values=True) is True
    assert json.loads(out.read_text())["huggingface"]["value"] == HF
    assert tool(a).export_to_json(tmp_path / "no" / "dir.json") is False
    with a.client() as c:
        c.lock()
    assert tool(a).migrate_from_env({"huggingface": "MY_HF"}) == {"huggingface": False}
    assert tool(a).export_to_json(out) is False


class CountingClient(Client):
    """The real client, noting the size of each pipelined batch it sends."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.batches: list[int] = []

    def call_many(self, requests: Any) -> list[Any]:
        requests = list(requests)
        self.batches.append(len(requests))
        return super().call_many(requests)


def test_export_streams_a_batch_at_a_time(unlocked_agent: AgentProcess) -> None:
    a = unlocked_agent
    n = 2 * migrate.EXPORT_BATCH + 7
    with a.client(timeout=60) as c:
        c.call_many([("store", {"platform": f"s{i:05d}", "value": f"value-{i:05d}-" + "v" * 20}) for i in range(n)])
    with CountingClient(a.socket, autostart=False, timeout=60) as c:
        stream = migrate.export_stream(c, include_values=True)
        record, item = next(stream)
        assert record is not None and item.name == "s00000" and record["value"] == "value-00000-" + "v" * 20
        assert c.batches == [migrate.EXPORT_BATCH]  # a batch's values (the listing has their metadata), no more yet
        rest = list(stream)
        assert len(rest) == n - 1 and c.batches == [migrate.EXPORT_BATCH] * 2 + [7]
        data, items = migrate.export_records(c, include_values=True)
    assert len(data) == n and all(i.status == "exported" for i in items)
    out = a.home / "export.json"
    done = a.cli("export", str(out), "--include-values", timeout=120)
    assert done.returncode == OK, done.stderr
    # written as it is fetched, the same text a whole dict gives
    assert out.read_text() == json.dumps(data, indent=2, sort_keys=True) + "\n"
    stdout = a.cli("export", "-", "--include-values", timeout=120)
    assert stdout.stdout == out.read_text()


def test_export_reports_a_row_that_fails_its_check_and_exports_the_rest(unlocked_agent: AgentProcess) -> None:
    import sqlite3

    from support import PASSPHRASE

    a = unlocked_agent
    with a.client() as c:
        c.store("runpod", "r" * 30, metadata={"team": "ml"})
        c.store("wandb", "w" * 40)
        c.lock()
    db = sqlite3.connect(a.home / "data" / "credential-agent" / "vault.sqlite3")  # a token bound to another row
    db.execute("UPDATE credentials SET metadata = (SELECT metadata FROM credentials WHERE platform = 'wandb') "
               "WHERE platform = 'runpod'")
    db.commit()
    db.close()
    with a.client() as c:
        c.unlock(PASSPHRASE)
        data, items = migrate.export_records(c, include_values=True)
    assert list(data) == ["wandb"] and data["wandb"]["value"] == "w" * 40
    failed = [i for i in items if i.status == "failed"]
    assert [i.name for i in failed] == ["runpod"] and failed[0].reason and "r" * 30 not in failed[0].reason
    done = a.cli("export", str(a.home / "out.json"), "--include-values")
    assert done.returncode == ERROR and "failed" in done.stdout and "runpod" in done.stdout
