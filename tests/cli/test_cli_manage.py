"""The everyday commands for many entries and for unlocking, through the real ``agent``
command: at a terminal (a pty, ``tests/support/terminal.py``) and from scripts."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from client import errors
from support import PASSPHRASE, AgentProcess

RP = "rp_" + "r" * 30
HF = "hf_" + "Q" * 34


def _names(out: str) -> list[tuple[str, str]]:
    return [(e["platform"], e["credential_type"]) for e in json.loads(out)]


def _status(a: AgentProcess) -> dict[str, Any]:
    with a.client() as c:
        st: dict[str, Any] = c.status()
        return st


# --- unlock on demand -------------------------------------------------------------------
def test_get_at_a_terminal_asks_the_passphrase_with_retries(unlocked_agent: AgentProcess) -> None:
    a = unlocked_agent
    with a.client() as c:
        c.store("runpod", RP)
        c.lock()
    t = a.terminal("get", "runpod")
    t.answer("Passphrase: ", "wrong one")
    t.expect("wrong passphrase, try again")
    t.answer("Passphrase: ", PASSPHRASE)
    assert t.wait() == 0
    assert RP in t.output and PASSPHRASE not in t.output  # the prompt does not echo
    assert not _status(a)["locked"]


def test_three_wrong_passphrases_fail_with_locked(unlocked_agent: AgentProcess) -> None:
    a = unlocked_agent
    with a.client() as c:
        c.store("runpod", RP)
        c.lock()
    t = a.terminal("get", "runpod")
    for _ in range(3):
        t.answer("Passphrase: ", "not it")
    assert t.wait() == 3
    assert t.output.count("wrong passphrase, try again") == 2
    assert "3 wrong passphrases; the agent stays locked" in t.output and RP not in t.output
    assert _status(a)["locked"]


def test_scripts_keep_exit_code_3_and_no_prompt(unlocked_agent: AgentProcess) -> None:
    a = unlocked_agent
    with a.client() as c:
        c.store("runpod", RP)
        c.lock()
    for args in (("get", "runpod"), ("exec", "--platform", "runpod", "--", "true"), ("mv", "runpod", "rp2")):
        done = a.cli(*args, input=PASSPHRASE + "\n")
        assert done.returncode == 3 and "agent unlock" in done.stderr and "Passphrase" not in done.stderr, args
    assert _status(a)["locked"]


def test_set_and_exec_at_a_terminal_unlock_first(unlocked_agent: AgentProcess) -> None:
    a = unlocked_agent
    with a.client() as c:
        c.lock()
    t = a.terminal("set", "runpod")
    t.answer("Passphrase: ", PASSPHRASE)
    t.answer("Value for runpod/api-key: ", RP)  # the value is asked after the unlock
    assert t.wait() == 0 and "stored runpod/api-key" in t.output
    with a.client() as c:
        c.lock()
    t = a.terminal("exec", "--platform", "runpod", "--", "sh", "-c", 'test "$RUNPOD_API_KEY" = "$0" && echo same',
                 RP)
    t.answer("Passphrase: ", PASSPHRASE)
    assert t.wait() == 0 and "same" in t.output


def test_unlock_at_a_terminal_has_three_tries(unlocked_agent: AgentProcess) -> None:
    a = unlocked_agent
    with a.client() as c:
        c.lock()
    t = a.terminal("unlock")
    t.answer("Passphrase: ", "nope")
    t.answer("Passphrase: ", PASSPHRASE)
    assert t.wait() == 0 and "unlocked" in t.output
    with a.client() as c:
        c.lock()
    t = a.terminal("unlock")
    for _ in range(3):
        t.answer("Passphrase: ", "nope")
    assert t.wait() == 1 and "3 wrong passphrases" in t.output
    assert _status(a)["locked"]


def test_unlock_timeout_locks_the_agent_by_itself(unlocked_agent: AgentProcess) -> None:
    a = unlocked_agent
    assert a.cli("lock").returncode == 0
    done = a.cli("unlock", "--timeout", "2h", input=PASSPHRASE + "\n")
    assert done.returncode == 0 and "locking again in 7200 s" in done.stdout
    st = _status(a)
    assert 0 < st["unlock_bound_left_s"] <= 7200 and st["locks_in_s"] == pytest.approx(st["unlock_bound_left_s"])
    assert "unlock --timeout" in a.cli("status").stdout and "locks at" in a.cli("status").stdout
    # a lock ends the bound: the next plain unlock has none
    assert a.cli("lock").returncode == 0
    assert a.cli("unlock", input=PASSPHRASE + "\n").returncode == 0
    assert _status(a)["unlock_bound_left_s"] is None
    # a short bound, set on the open agent: it locks itself once the agent says the time is up
    assert a.cli("unlock", "--timeout", "1").returncode == 0
    deadline = time.monotonic() + 60
    while not (st := _status(a))["locked"] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert st["locked"] and not st["locked_by_user"]
    assert "auto-lock timer" in a.log()


@pytest.mark.parametrize("bad", ["0", "-5", "soon", "1x"])
def test_unlock_timeout_refuses_what_is_not_a_time(unlocked_agent: AgentProcess, bad: str) -> None:
    done = unlocked_agent.cli("unlock", "--timeout", bad)
    assert done.returncode == 2 and "--timeout" in done.stderr


def test_the_agent_refuses_a_bad_lock_after(unlocked_agent: AgentProcess) -> None:
    with unlocked_agent.client() as c:
        for bad in (0, -1, float("inf"), float("nan"), 1e12):
            with pytest.raises(errors.BadRequest, match="lock_after"):
                c.unlock(lock_after=bad)
        assert not c.status()["locked"]  # and it keeps serving


# --- many entries ------------------------------------------------------------------------
@pytest.fixture
def stocked(unlocked_agent: AgentProcess) -> AgentProcess:
    with unlocked_agent.client() as c:
        c.store("huggingface", HF, metadata={"team": "ml"})
        c.store("hf-mirror", HF)
        c.store("runpod", RP)
        c.store("runpod", "s" * 30, "api-secret", validate=False)
        c.store("lambdalabs", "l" * 30, "api-secret", validate=False)
    return unlocked_agent


def test_ls_globs_platform_and_type(stocked: AgentProcess) -> None:
    a = stocked
    assert _names(a.cli("ls", "h*", "--json").stdout) == [("hf-mirror", "api-key"), ("huggingface", "api-key")]
    assert _names(a.cli("ls", "*/api-secret", "--json").stdout) == [("lambdalabs", "api-secret"),
                                                                   ("runpod", "api-secret")]
    assert _names(a.cli("ls", "RUN*", "lambda*", "--json").stdout) == [
        ("lambdalabs", "api-secret"), ("runpod", "api-key"), ("runpod", "api-secret")]
    text = a.cli("ls", "hug*").stdout
    assert "huggingface" in text and "runpod" not in text and HF not in text
    none = a.cli("ls", "nothing*")
    assert none.returncode == 0 and "no credential matches nothing*" in none.stdout


def test_rm_of_several_needs_yes_from_a_script(stocked: AgentProcess) -> None:
    a = stocked
    refused = a.cli("rm", "huggingface", "hf-mirror")
    assert refused.returncode == 2 and "--yes" in refused.stderr
    assert len(json.loads(a.cli("ls", "--json").stdout)) == 5  # nothing was deleted
    done = a.cli("rm", "huggingface", "runpod/api-secret", "--yes", "--json")
    assert done.returncode == 0
    assert json.loads(done.stdout) == {"deleted": [{"platform": "huggingface", "credential_type": "api-key"},
                                                   {"platform": "runpod", "credential_type": "api-secret"}],
                                       "failed": []}
    # one name from a script: as it always was, no --yes
    assert a.cli("rm", "hf-mirror").returncode == 0
    assert _names(a.cli("ls", "--json").stdout) == [("lambdalabs", "api-secret"), ("runpod", "api-key")]


def test_rm_all_types_of_a_platform(stocked: AgentProcess) -> None:
    a = stocked
    done = a.cli("rm", "runpod", "--all-types", "-y")
    assert done.returncode == 0
    assert "deleted runpod/api-key" in done.stdout and "deleted runpod/api-secret" in done.stdout
    assert not any(p == "runpod" for p, _ in _names(a.cli("ls", "--json").stdout))
    missing = a.cli("rm", "runpod", "--all-types", "-y")
    assert missing.returncode == 1 and "nothing is stored for runpod" in missing.stderr
    mixed = a.cli("rm", "runpod/api-key", "--all-types", "-y")
    assert mixed.returncode == 2


def test_rm_of_several_asks_at_a_terminal(stocked: AgentProcess) -> None:
    a = stocked
    t = a.terminal("rm", "--all-types", "runpod")
    t.answer("Delete 2 credentials: runpod/api-key, runpod/api-secret? [y/N] ", "n")
    assert t.wait() == 1 and "nothing was deleted" in t.output
    assert ("runpod", "api-key") in _names(a.cli("ls", "--json").stdout)
    t = a.terminal("rm", "huggingface", "hf-mirror")
    t.answer("? [y/N] ", "y")
    assert t.wait() == 0 and "deleted hf-mirror/api-key" in t.output
    assert not any(p.startswith("h") for p, _ in _names(a.cli("ls", "--json").stdout))


def test_rm_of_several_reports_each_failure(stocked: AgentProcess) -> None:
    done = stocked.cli("rm", "huggingface", "nosuch", "-y", "--json")
    assert done.returncode == 1
    report = json.loads(done.stdout)
    assert report["deleted"] == [{"platform": "huggingface", "credential_type": "api-key"}]
    assert report["failed"][0]["platform"] == "nosuch" and report["failed"][0]["error"] == "not_found"


def test_mv_keeps_value_metadata_times_and_expiry(stocked: AgentProcess) -> None:
    a = stocked
    with a.client() as c:
        c.store("openai", "sk-" + "o" * 40, metadata={"owner": "alice"}, expires_at=2e9)
        before = c.metadata("openai")
    done = a.cli("mv", "openai", "openai-team", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"from": {"platform": "openai", "credential_type": "api-key"},
                                       "to": {"platform": "openai-team", "credential_type": "api-key"},
                                       "replaced": False}
    # sealed again under the new name: a restarted agent opens it (the row binding holds)
    a.stop()
    a.start()
    with a.client() as c:
        c.unlock(PASSPHRASE)
        after = c.metadata("openai-team")
        assert c.get("openai-team") == "sk-" + "o" * 40
        with pytest.raises(errors.NotFound):
            c.get("openai")
    for field in ("metadata", "created", "updated", "expires_at"):
        assert after[field] == before[field], field
    assert a.cli("mv", "runpod/api-secret", "runpod/old-secret").returncode == 0
    with a.client() as c:
        assert c.get("runpod", "old-secret") == "s" * 30


def test_mv_refuses_a_taken_name_unless_forced(stocked: AgentProcess) -> None:
    a = stocked
    taken = a.cli("mv", "hf-mirror", "huggingface")
    assert taken.returncode == 1 and "exists already" in taken.stderr and "--force" in taken.stderr
    with a.client() as c:
        assert c.metadata("huggingface")["metadata"] == {"team": "ml"}
    forced = a.cli("mv", "hf-mirror", "huggingface", "--force")
    assert forced.returncode == 0 and "replacing it" in forced.stdout
    with a.client() as c:
        assert c.metadata("huggingface")["metadata"] == {}  # hf-mirror's, moved over
        assert not any(e["platform"] == "hf-mirror" for e in c.list())
    assert a.cli("mv", "nosuch", "other").returncode == 1
    same = a.cli("mv", "runpod", "runpod/api-key")
    assert same.returncode == 1 and "already its name" in same.stderr
    assert a.cli("mv", "bad name", "x").returncode == 2


def test_mv_at_a_terminal_unlocks_first(stocked: AgentProcess) -> None:
    a = stocked
    with a.client() as c:
        c.lock()
    t = a.terminal("mv", "runpod", "runpod-old")
    t.answer("Passphrase: ", PASSPHRASE)
    assert t.wait() == 0 and "moved runpod/api-key to runpod-old/api-key" in t.output


def test_show_writes_terminal_escapes_in_metadata_as_text(unlocked_agent: AgentProcess) -> None:
    a = unlocked_agent
    with a.client() as c:
        c.store("runpod", RP, metadata={"owner": "ops\x1b]0;owned\x07", "note\x1b[2J": "x"})
    show = a.cli("show", "runpod")
    assert show.returncode == 0, show.stderr
    assert "\x1b" not in show.stdout and "\x07" not in show.stdout
    assert "meta.owner: ops\\x1b]0;owned\\x07" in show.stdout and "meta.note\\x1b[2J: x" in show.stdout


def test_a_typo_is_named_and_api_key_is_the_default_type(unlocked_agent: AgentProcess) -> None:
    a = unlocked_agent
    with a.client() as c:
        c.store("huggingface", "hf_" + "t" * 30)
        with pytest.raises(errors.NotFound, match="did you mean huggingface/api-key"):
            c.get("huggingfase")
        assert c.get("huggingface", "api_key") == c.get("huggingface", "API-KEY") == "hf_" + "t" * 30
    got = a.cli("get", "huggingfase")
    assert got.returncode == 1 and "did you mean huggingface/api-key?" in got.stderr
    made = a.cli("set", "runpood", input="r" * 25 + "\n")
    assert made.returncode == 0
    assert "runpood is a new platform; did you mean runpod?" in made.stderr
    assert "agent mv runpood runpod" in made.stderr
    again = a.cli("set", "runpood", input="r" * 25 + "\n")  # replacing: no note
    assert again.returncode == 0 and "new platform" not in again.stderr
    typed = a.cli("set", "wandb", "--type", "api_key", input="w" * 40 + "\n")
    assert typed.returncode == 0, typed.stderr
    assert [(e["platform"], e["credential_type"]) for e in a.client().list()] == [
        ("huggingface", "api-key"), ("runpood", "api-key"), ("wandb", "api-key")]


def test_rm_takes_the_patterns_ls_takes_and_asks_first(stocked: AgentProcess) -> None:
    a = stocked
    nothing = a.cli("rm", "nomatch*", "--yes")
    assert nothing.returncode == 1 and "no credential matches nomatch*; nothing was deleted" in nothing.stderr
    unasked = a.cli("rm", "h*")  # a pattern always asks, and there is no terminal to ask at
    assert unasked.returncode == 2 and "needs --yes" in unasked.stderr
    done = a.cli("rm", "h*", "*/api-secret", "--yes")
    assert done.returncode == 0, done.stderr
    assert sorted(done.stdout.splitlines()) == [
        "deleted hf-mirror/api-key", "deleted huggingface/api-key", "deleted lambdalabs/api-secret",
        "deleted runpod/api-secret"]
    assert _names(a.cli("ls", "--json").stdout) == [("runpod", "api-key")]


def test_remote_login_without_remotes_says_the_config_is_read_at_start(unlocked_agent: AgentProcess) -> None:
    done = unlocked_agent.cli("remote", "login", "team", input="s." + "x" * 24 + "\n")
    assert done.returncode != 0
    assert "named none ([remote.NAME] tables) when this agent started" in done.stderr
    assert "`agent stop`, then `agent start`" in done.stderr
