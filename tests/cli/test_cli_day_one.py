"""What a new user meets on day one, through the real `agent` command against real
agents: nothing silently lost (piped values, replaced keys, exported files), and one
clear line instead of a traceback (Ctrl-D, a closed pipe, misleading messages,
expired keys, weak passphrases). Terminal cases run under a real pty."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
import time

import pytest

from agent.cli.vault import MIN_PASSPHRASE
from client import protocol
from support import PASSPHRASE, ROOT, AgentProcess

OK, ERROR, USAGE, LOCKED, NO_AGENT = 0, 1, 2, 3, 4
BROKEN_PIPE = 141
RP = "rp_" + "CanaryRp" * 3
PEM = "\n".join(["-----BEGIN PRIVATE KEY-----", "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC", "CanaryPem0123456789abcdef",
                 "-----END PRIVATE KEY-----"])
SERVICE_ACCOUNT = json.dumps({"type": "service_account", "private_key": PEM + "\n", "client_email": "a b@x"},
                             indent=2)


def value_of(a: AgentProcess, platform: str, ctype: str = "api-key") -> str:
    with a.client() as c:
        value: str = c.get(platform, ctype)
        return value


# --- 1. a piped value is stored whole ---------------------------------------------------
def test_set_from_a_pipe_stores_the_whole_value(unlocked_agent: AgentProcess) -> None:
    a = unlocked_agent
    done = a.cli("set", "gcp", "--type", "service-account", input=SERVICE_ACCOUNT + "\n")
    assert done.returncode == OK, done.stderr
    assert done.stdout == "stored gcp/service-account\n"
    assert value_of(a, "gcp", "service-account") == SERVICE_ACCOUNT  # one trailing newline stripped, no more
    assert a.cli("set", "tls", "--type", "pem", input=PEM + "\r\n").returncode == OK
    assert value_of(a, "tls", "pem") == PEM
    assert a.cli("set", "mytool", input="two words\n\n").returncode == OK  # a platform with no rule
    assert value_of(a, "mytool") == "two words\n"
    assert PEM not in done.stdout + done.stderr


def test_set_from_a_pipe_keeps_platform_rules_and_the_size_limit(unlocked_agent: AgentProcess) -> None:
    a = unlocked_agent
    done = a.cli("set", "huggingface", input="hf_abc def\n")
    assert done.returncode == ERROR and "no whitespace" in done.stderr and "abc def" not in done.stderr
    done = a.cli("set", "mytool", input="x" * (protocol.MAX_VALUE + 1) + "\n")
    assert done.returncode == ERROR
    assert f"longer than {protocol.MAX_VALUE} characters" in done.stderr and "Traceback" not in done.stderr
    assert a.cli("set", "mytool", input="x" * protocol.MAX_VALUE + "\n").returncode == OK  # the limit itself fits
    assert len(value_of(a, "mytool")) == protocol.MAX_VALUE
    assert a.cli("set", "mytool", input="bell\x07\n").returncode == ERROR  # still no control characters


# --- 2. replacing keeps metadata and expiry -----------------------------------------------
def test_set_again_keeps_metadata_and_expiry_unless_told(unlocked_agent: AgentProcess) -> None:
    a = unlocked_agent
    assert a.cli("set", "runpod", "--meta", "owner=alice", "--expires", "90d", input=RP + "\n").returncode == OK
    with a.client() as c:
        first = c.metadata("runpod")
    done = a.cli("set", "runpod", input=RP + "x\n")
    assert done.returncode == OK and done.stdout == "replaced runpod/api-key\n"
    with a.client() as c:
        entry = c.metadata("runpod")
        assert c.get("runpod") == RP + "x"
    assert entry["metadata"] == {"owner": "alice"} and entry["expires_at"] == first["expires_at"] is not None
    assert a.cli("set", "runpod", "--meta", "team=ml", input=RP + "\n").returncode == OK
    with a.client() as c:
        assert c.metadata("runpod")["metadata"] == {"owner": "alice", "team": "ml"}
    assert a.cli("set", "runpod", "--clear-meta", "--meta", "team=infra", input=RP + "\n").returncode == OK
    with a.client() as c:
        entry = c.metadata("runpod")
    assert entry["metadata"] == {"team": "infra"} and entry["expires_at"] == first["expires_at"]
    assert a.cli("set", "runpod", "--clear-meta", "--expires", "never", input=RP + "\n").returncode == OK
    with a.client() as c:
        entry = c.metadata("runpod")
    assert entry["metadata"] == {} and entry["expires_at"] is None


def test_set_over_a_corrupt_entry_needs_clear_meta(unlocked_agent: AgentProcess) -> None:
    a = unlocked_agent
    with a.client() as c:
        c.store("runpod", RP, metadata={"team": "ml"})
        c.store("mytool", "other")
        c.lock()
    db = sqlite3.connect(a.home / "data" / "credential-agent" / "vault.sqlite3")  # metadata bound to another row
    db.execute("UPDATE credentials SET metadata = (SELECT metadata FROM credentials WHERE platform = 'mytool') "
               "WHERE platform = 'runpod'")
    db.commit()
    db.close()
    with a.client() as c:
        c.unlock(PASSPHRASE)
    done = a.cli("set", "runpod", input=RP + "z\n")
    assert done.returncode == ERROR and "integrity check" in done.stderr and "--clear-meta" in done.stderr
    assert a.cli("set", "runpod", "--meta", "team=infra", input=RP + "z\n").returncode == ERROR  # a merge, too
    done = a.cli("set", "runpod", "--clear-meta", input=RP + "z\n")
    assert done.returncode == OK and done.stdout == "replaced runpod/api-key\n"
    with a.client() as c:
        assert c.get("runpod") == RP + "z" and c.metadata("runpod")["metadata"] == {}


def test_import_replacing_keeps_metadata_and_expiry(unlocked_agent: AgentProcess) -> None:
    a = unlocked_agent
    with a.client() as c:
        c.store("runpod", RP, metadata={"owner": "alice"}, expires_at=2e9)
    path = a.home / "creds.json"
    path.write_text(json.dumps({"runpod": {"api_key": RP + "y", "metadata": {"source": "old laptop"}}}))
    done = a.cli("import", "json", str(path))
    assert done.returncode == OK and "replaced  runpod" in done.stdout
    with a.client() as c:
        entry = c.metadata("runpod")
        assert c.get("runpod") == RP + "y"
    assert entry["metadata"] == {"owner": "alice", "source": "old laptop"} and entry["expires_at"] == 2e9


def test_the_client_api_keeps_its_replace_and_update_semantics(unlocked_agent: AgentProcess) -> None:
    with unlocked_agent.client() as c:
        c.store("runpod", RP, metadata={"owner": "alice"}, expires_at=2e9)
        c.update("runpod", RP + "u")  # update keeps both, as documented
        assert c.metadata("runpod")["metadata"] == {"owner": "alice"}
        assert c.metadata("runpod")["expires_at"] == 2e9
        c.store("runpod", RP)  # store replaces the whole record, as it always has
        assert c.metadata("runpod")["metadata"] == {} and c.metadata("runpod")["expires_at"] is None


# --- 3. export never writes over a file unasked, nor through a link ---------------------
def test_export_refuses_an_existing_file_and_never_follows_a_symlink(unlocked_agent: AgentProcess) -> None:
    a = unlocked_agent
    with a.client() as c:
        c.store("runpod", RP)
    backup = a.home / "backup.json"
    backup.write_text("an earlier backup")
    done = a.cli("export", str(backup), "--include-values")
    assert done.returncode == ERROR and "already exists" in done.stderr and "--force" in done.stderr
    assert backup.read_text() == "an earlier backup"
    target = a.home / "elsewhere.txt"
    target.write_text("not yours to overwrite")
    link = a.home / "link.json"
    link.symlink_to(target)
    dangling = a.home / "dangling.json"
    dangling.symlink_to(a.home / "nothing-here")
    for path in (link, dangling):
        done = a.cli("export", str(path), "--include-values")
        assert done.returncode == ERROR and "already exists" in done.stderr
    assert not (a.home / "nothing-here").exists()
    done = a.cli("export", str(link), "--include-values", "--force")
    assert done.returncode == OK, done.stderr
    assert target.read_text() == "not yours to overwrite"  # the link was replaced, not followed
    assert not link.is_symlink() and stat.S_IMODE(link.stat().st_mode) == 0o600
    assert json.loads(link.read_text())["runpod"]["value"] == RP
    assert a.cli("export", str(a.home / "new.json")).returncode == OK
    assert stat.S_IMODE((a.home / "new.json").stat().st_mode) == 0o600
    assert sorted(p.name for p in a.home.iterdir() if p.name.endswith(".tmp")) == []


# --- 4. Ctrl-D and a closed pipe ----------------------------------------------------------
def test_ctrl_d_at_a_hidden_prompt_is_one_line(unlocked_agent: AgentProcess) -> None:
    t = unlocked_agent.terminal("set", "mytool")
    t.expect("Value for mytool/api-key: ")
    t.send("\x04")
    assert t.wait() == ERROR
    assert "agent: no answer (end of input at the prompt); nothing was changed" in t.output
    assert "Traceback" not in t.output and "EOFError" not in t.output
    with unlocked_agent.client() as c:
        assert c.list() == []


def test_a_closed_stdout_ends_quietly(unlocked_agent: AgentProcess) -> None:
    a = unlocked_agent
    with a.client() as c:
        for i in range(40):
            c.store(f"tool{i}", "v" * 20)
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first byte, as when `head` has exited
    try:
        done = subprocess.run(a.command("ls"), env=a.env, stdout=write_end, stderr=subprocess.PIPE,
                              stdin=subprocess.DEVNULL, timeout=30)
    finally:
        os.close(write_end)
    assert done.returncode == BROKEN_PIPE and done.stderr == b""
    shell = subprocess.run(["sh", "-c", '"$@" | head -1', "sh", *a.command("ls")], env=a.env,
                           capture_output=True, text=True, timeout=30)
    assert shell.stdout.startswith("PLATFORM") and shell.stderr == ""


# --- 5. messages that say what is wrong -----------------------------------------------------
def test_lock_without_an_agent_says_none_is_running() -> None:
    a = AgentProcess()  # never started
    try:
        done = a.cli("lock")
    finally:
        a.cleanup()
    assert done.returncode == NO_AGENT
    assert "no agent is running" in done.stderr and "autostart" not in done.stderr


def test_init_at_a_terminal_asks_again_after_an_empty_passphrase(agent: AgentProcess) -> None:
    t = agent.terminal("init", "--key-source", "passphrase")
    t.expect("New passphrase: ")
    t.send("\n")
    out = t.expect("the passphrase is empty")
    assert "Repeat" not in out and "stdin" not in out
    t.expect("New passphrase: ")
    good = "correct horse battery staple"
    t.send(good + "\n")
    t.expect("Repeat: ")
    t.send(good + "\n")
    t.expect("Print a recovery code")
    t.send("n\n")
    assert t.wait() == OK, t.output
    assert "vault created" in t.output and good not in t.output


def test_exec_suggests_the_exact_set_command(unlocked_agent: AgentProcess) -> None:
    done = unlocked_agent.cli("exec", "--env", "X=hf:read", "--", "true")
    assert done.returncode == ERROR and "`agent set hf --type read`" in done.stderr


def test_import_names_a_record_with_a_bad_platform_name(unlocked_agent: AgentProcess) -> None:
    a = unlocked_agent
    path = a.home / "creds.json"
    path.write_text(json.dumps({"runpod": RP, "my custom": "v1"}))
    done = a.cli("import", "json", str(path))
    assert done.returncode == ERROR
    line = next(ln for ln in done.stdout.splitlines() if ln.startswith("failed"))
    assert "entry 2" in line and '"my custom"' in line and "invalid platform name" in line
    assert "ASCII letters, digits, '-' or '_'" in line and "v1" not in done.stdout
    listed = a.home / "list.json"
    listed.write_text(json.dumps([{"platform": "my custom", "value": "v1"}]))
    done = a.cli("import", "json", str(listed))
    assert 'record 1: "my custom": invalid platform name' in done.stdout


# --- 6. expiry at exec and set; variables of other types ----------------------------------
def test_exec_warns_about_an_expired_key_and_refuses_when_asked(unlocked_agent: AgentProcess) -> None:
    a = unlocked_agent
    with a.client() as c:
        c.store("runpod", RP, expires_at=time.time() - 86400)
    show = ["sh", "-c", 'printf %s "$RUNPOD_API_KEY"']
    done = a.cli("exec", "--platform", "runpod", "--", *show)
    assert done.returncode == OK and done.stdout == RP
    warning = [ln for ln in done.stderr.splitlines() if "expired" in ln]
    assert len(warning) == 1 and warning[0].startswith("agent: warning: runpod/api-key expired on ")
    done = a.cli("exec", "--refuse-expired", "--platform", "runpod", "--", *show)
    assert done.returncode == ERROR and done.stdout == ""
    assert "runpod/api-key expired on" in done.stderr and "sh was not started" in done.stderr
    assert RP not in done.stderr


def test_set_refuses_an_expiry_in_the_past(unlocked_agent: AgentProcess) -> None:
    a = unlocked_agent
    done = a.cli("set", "runpod", "--expires", "2001-01-01", input=RP + "\n")
    assert done.returncode == USAGE and "in the past" in done.stderr
    with a.client() as c:
        assert c.list() == []


def test_exec_platform_with_a_type_sets_that_types_variable(unlocked_agent: AgentProcess) -> None:
    a = unlocked_agent
    with a.client() as c:
        c.store("runpod", "secret-part", "api-secret")
        c.store("runpod", RP)
    done = a.cli("exec", "--platform", "runpod:api-secret", "--platform", "runpod", "--",
                 "sh", "-c", 'printf "%s|%s" "$RUNPOD_API_SECRET" "$RUNPOD_API_KEY"')
    assert done.returncode == OK, done.stderr
    assert done.stdout == f"secret-part|{RP}"


# --- 7. weak passphrases ------------------------------------------------------------------
def test_a_short_passphrase_from_stdin_is_warned_about_and_used(agent: AgentProcess) -> None:
    done = agent.cli("init", "--key-source", "passphrase", input="abc\n")
    assert done.returncode == OK, done.stderr
    assert "warning: the passphrase is 3 characters long; use at least 12" in done.stderr
    with agent.client() as c:
        c.lock()
        c.unlock("abc")


def test_a_short_passphrase_at_a_terminal_needs_a_yes(agent: AgentProcess) -> None:
    t = agent.terminal("init", "--key-source", "passphrase")
    t.expect("New passphrase: ")
    t.send("abc\n")
    t.expect("Use it anyway? [y/N] ")
    t.send("n\n")
    t.expect("New passphrase: ")
    t.send("abc\n")
    t.expect("Use it anyway? [y/N] ")
    t.send("y\n")
    t.expect("Repeat: ")
    t.send("abc\n")
    t.expect("Print a recovery code")
    t.send("n\n")
    assert t.wait() == OK, t.output
    assert "vault created" in t.output
    with agent.client() as c:
        c.lock()
        c.unlock("abc")


@pytest.mark.parametrize("answer", ["\n", "\x04"])
def test_a_short_passphrase_refused_three_times_stops(agent: AgentProcess, answer: str) -> None:
    t = agent.terminal("init", "--key-source", "passphrase")
    for _ in range(3):
        t.expect("New passphrase: ")
        t.send("abc\n")
        t.expect("Use it anyway? [y/N] ")
        t.send(answer)
    assert t.wait() == ERROR
    assert "no new passphrase after 3 tries" in t.output and "Traceback" not in t.output
    with agent.client() as c:
        assert not c.status()["initialized"]


def test_the_cli_docs_state_the_minimum() -> None:
    cli_doc = " ".join((ROOT / "docs" / "cli.md").read_text().split())
    assert f"at least {MIN_PASSPHRASE} characters" in cli_doc


def test_rotate_key_warns_about_a_short_new_passphrase_from_stdin(unlocked_agent: AgentProcess) -> None:
    a = unlocked_agent
    done = a.cli("rotate-key", "--new-passphrase", input=f"{PASSPHRASE}\nshort-pw\n", timeout=120)
    assert done.returncode == OK, done.stderr
    assert "warning: the passphrase is 8 characters long" in done.stderr and "short-pw" not in done.stderr
    with a.client() as c:
        c.lock()
        c.unlock("short-pw")
