"""The validation rules on every path that applies them, through the real ``agent``
command and client against a real agent (the rules themselves: tests/unit/test_validation.py)."""

from __future__ import annotations

import json

import pytest

from support import AgentProcess

WANDB_V1 = "wandb_v1_" + "Ab3_" * 19 + "x"  # 9 + 77 = 86 characters, as in tests/unit/test_validation.py


@pytest.mark.parametrize("key", [WANDB_V1, "0123456789abcdef" * 2 + "01234567"], ids=["v1", "legacy"])
def test_every_path_accepts_both_wandb_formats(unlocked_agent: AgentProcess, key: str) -> None:
    a = unlocked_agent
    assert a.cli("validate", "wandb", input=key).returncode == 0
    done = a.cli("set", "wandb", input=key)
    assert done.returncode == 0, done.stderr
    with a.client() as c:
        assert c.get("wandb") == key
        assert c.validate("wandb", key) is True
        c.delete("wandb")
    source = a.home / "keys.json"
    source.write_text(json.dumps({"wandb": key}))
    done = a.cli("import", "json", str(source))
    assert done.returncode == 0, done.stdout + done.stderr
    done = a.cli("import", "env", "wandb=WANDB_API_KEY", env={"WANDB_API_KEY": key})
    assert done.returncode == 0 and "replaced" in done.stdout, done.stdout + done.stderr
    exported = a.home / "export.json"
    assert a.cli("export", "--include-values", str(exported)).returncode == 0
    with a.client() as c:
        c.delete("wandb")
    done = a.cli("import", "json", str(exported))  # our own export, read back
    assert done.returncode == 0, done.stdout + done.stderr
    with a.client() as c:
        assert c.get("wandb") == key


def test_a_refusal_at_the_cli_names_the_rule_and_no_validate(unlocked_agent: AgentProcess) -> None:
    a = unlocked_agent
    bad = "wandb_v1_tooshort"
    for args in (("set", "wandb"), ("validate", "wandb")):
        done = a.cli(*args, input=bad)
        assert done.returncode == 1
        assert "rule wandb-v1 or wandb-legacy or wandb-server" in done.stderr and "--no-validate" in done.stderr
        assert bad not in done.stderr + done.stdout
    source = a.home / "bad.json"
    source.write_text(json.dumps({"huggingface": "not-hf"}))
    done = a.cli("import", "json", str(source))
    assert "Hugging Face tokens start with 'hf_'" in done.stdout + done.stderr
    assert "--no-validate" in done.stdout + done.stderr
    assert a.cli("set", "wandb", "--no-validate", input=bad).returncode == 0  # the way out works
    with a.client() as c:
        assert c.get("wandb") == bad
