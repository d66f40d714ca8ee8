"""`agent history` and `rm`'s way back, through the real command against a real agent."""

from __future__ import annotations

import json
from pathlib import Path

from support import AgentProcess


def test_history_lists_shows_and_restores(unlocked_agent: AgentProcess) -> None:
    a = unlocked_agent
    for value in ("hf_first_value_000", "hf_second_value_00", "hf_third_value_000"):
        assert a.cli("set", "hf", "--no-validate", input=value + "\n").returncode == 0
    listed = a.cli("history", "hf")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split() == ["VERSION", "SET", "REPLACED", "HOW", "BY"]
    assert [line.split()[0] for line in lines[1:]] == ["1", "2"]
    assert all("replaced" in line and line.rstrip().endswith("agent") for line in lines[1:])
    assert "hf_" not in listed.stdout  # a listing never shows values
    shown = a.cli("history", "huggingface", "--show", "2")
    assert shown.stdout == "hf_first_value_000\n"
    restored = a.cli("history", "HF", "--restore", "2")
    assert restored.returncode == 0, restored.stderr
    assert restored.stdout.startswith("restored huggingface/api-key to version 2 (set ")
    assert "the value it replaced is version 1 of its history now" in restored.stdout
    assert a.cli("get", "hf").stdout == "hf_first_value_000\n"
    rows = json.loads(a.cli("history", "hf", "--json").stdout)
    assert [r["version"] for r in rows] == [1, 2, 3] and rows[0]["reason"] == "replaced"
    assert all("value" not in r for r in rows)


def test_rm_says_how_to_undo_it_and_the_undo_works(unlocked_agent: AgentProcess) -> None:
    a = unlocked_agent
    a.cli("set", "wandb", "--type", "team", "--no-validate", input="w" * 40 + "\n")
    rm = a.cli("rm", "wandb/team")
    assert rm.returncode == 0 and rm.stdout == "deleted wandb/team\n"
    assert "`agent history wandb/team --restore` brings it back" in rm.stderr
    every = a.cli("history")
    assert every.stdout.splitlines()[0].split()[:3] == ["PLATFORM", "TYPE", "VERSION"]
    assert any(line.split()[:2] == ["wandb", "team"] and "deleted" in line for line in every.stdout.splitlines())
    back = a.cli("history", "wandb/team", "--restore")
    assert back.returncode == 0 and back.stdout.startswith("restored wandb/team to version 1")
    assert "replaced" not in back.stdout  # nothing was current: nothing went into the history
    assert a.cli("get", "wandb", "--type", "team").stdout == "w" * 40 + "\n"


def test_mistakes_get_one_clear_line(unlocked_agent: AgentProcess) -> None:
    a = unlocked_agent
    assert a.cli("history", "nothing-here").stdout == "no previous values of nothing-here/api-key are kept\n"
    no_name = a.cli("history", "--show", "1")
    assert no_name.returncode == 2 and "need a credential's name" in no_name.stderr
    bad = a.cli("history", "hf", "--show", "x")
    assert bad.returncode == 2 and "a version is a whole number" in bad.stderr
    both = a.cli("history", "hf", "--show", "1", "--restore")
    assert both.returncode == 2 and "not allowed with" in both.stderr
    missing = a.cli("history", "hf", "--show", "3")
    assert missing.returncode == 1
    assert missing.stderr == "agent: huggingface/api-key has no version 3 in its history (0 previous values kept)\n"
    assert "Traceback" not in no_name.stderr + bad.stderr + missing.stderr


def test_export_leaves_history_out_unless_asked(unlocked_agent: AgentProcess, tmp_path: Path) -> None:
    a = unlocked_agent
    a.cli("set", "runpod", "--no-validate", input="rp_old_value\n")
    a.cli("set", "runpod", "--no-validate", "--meta", "env=prod", input="rp_new_value\n")
    plain = json.loads(a.cli("export", "-", "--include-values").stdout)
    assert "history" not in plain["runpod"]
    names = json.loads(a.cli("export", "-", "--include-history").stdout)
    [old] = names["runpod"]["history"]
    assert (old["version"], old["reason"]) == (1, "replaced") and "value" not in old
    assert old["set_at"].startswith("20") and old["replaced_at"].startswith("20")
    full = tmp_path / "full.json"
    assert a.cli("export", str(full), "--include-values", "--include-history").returncode == 0
    data = json.loads(full.read_text())
    assert data["runpod"]["value"] == "rp_new_value"
    assert data["runpod"]["history"][0]["value"] == "rp_old_value"
    assert data["runpod"]["history"][0]["metadata"] == {}
    # the file imports as before: the current values (previous ones are not made current)
    fresh = AgentProcess().start()
    try:
        fresh.init_passphrase()
        imported = fresh.cli("import", "json", str(full), "--no-validate")
        assert imported.returncode == 0, imported.stderr
        assert fresh.cli("get", "runpod").stdout == "rp_new_value\n"
    finally:
        fresh.cleanup()
