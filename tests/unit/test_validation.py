from __future__ import annotations

import pytest

from client import errors
from client.validation import RULES, check_credential, check_name, is_valid_credential, rules_for


@pytest.mark.parametrize(("platform", "value", "ok"), [
    ("huggingface", "hf_" + "a" * 30, True),
    ("hf", "hf_abc", True),
    ("huggingface", "abc_" + "a" * 30, False),
    ("wandb", "a" * 40, True),
    ("wandb", "a" * 39, False),
    ("runpod", "r" * 20, True),
    ("runpod", "r" * 19, False),
    ("lambdalabs", "l" * 19, False),
    ("lambda", "l" * 20, True),
    ("vastai", "v" * 19, False),
    ("vast", "v" * 20, True),
    ("myplatform", "x", True),
    ("myplatform", "", False),
    ("myplatform", "has space", True),  # no rule against spaces: a phrase, a JSON document
    ("myplatform", "tab\tinside", True),
    ("myplatform", "-----BEGIN KEY-----\r\nabc\n-----END KEY-----", True),
    ("myplatform", "nul\x00", False),
    ("myplatform", "bell\x07", False),
    ("myplatform", "del\x7f", False),
    ("huggingface", "hf_abc def", False),  # a platform with a rule: whitespace is a bad paste
    ("runpod", "r" * 20 + "\n", False),
    ("vast", "v" * 20 + " ", False),
])
def test_rules(platform: str, value: str, ok: bool) -> None:
    assert is_valid_credential(platform, value) is ok


def test_failure_names_the_rule_not_the_value() -> None:
    with pytest.raises(errors.InvalidCredential) as info:
        check_credential("huggingface", "SECRET_VALUE_123")
    assert "hf_" in info.value.message
    assert "SECRET_VALUE_123" not in info.value.message


@pytest.mark.parametrize("name", ["", "a" * 65, "a b", "a/b", "é", "https://x", "a.b", "a\x00"])
def test_bad_names(name: str) -> None:
    with pytest.raises(errors.BadRequest):
        check_name(name)


@pytest.mark.parametrize("name", ["a", "A-Z_0-9", "a" * 64])
def test_good_names(name: str) -> None:
    assert check_name(name) == name


def test_platform_rules_apply_to_api_keys_only() -> None:
    check_credential("lambdalabs", "short", "ssh-key")  # generic rule only
    with pytest.raises(errors.InvalidCredential):
        check_credential("lambdalabs", "short")
    check_credential("lambdalabs", "has space", "ssh-key")  # the whitespace ban is the api-key rule's
    with pytest.raises(errors.InvalidCredential):
        check_credential("lambdalabs", "nul\x00", "ssh-key")


# --- the platform rules, as the table holds them -------------------------------------------
WANDB_V1 = "wandb_v1_" + "Ab3_" * 19 + "x"  # 9 + 77 = 86 characters
# rule name -> (platform, accepted samples, refused samples)
SAMPLES: dict[str, tuple[str, list[str], list[str]]] = {
    "huggingface": ("huggingface", ["hf_" + "a" * 30, "hf_x"], ["HF_abc", "abc_hf_", "h" * 40]),
    "wandb-v1": ("wandb", [WANDB_V1, "wandb_v1_" + "9" * 77],
                 [WANDB_V1[:-1], WANDB_V1 + "y", "wandb_v1_" + "a-b." * 19 + "x", "wandb_v2_" + "a" * 77]),
    "wandb-legacy": ("wandb", ["0123456789abcdef" * 2 + "01234567", "w" * 40], ["a" * 39, "a" * 41]),
    "wandb-server": ("wandb", ["local-" + "0123456789abcdef" * 2 + "01234567"],
                     ["local-" + "a" * 39, "local-" + "a" * 41, "local-" + "a-b_" * 10]),
    "runpod": ("runpod", ["r" * 20, "rpa_" + "R" * 40], ["r" * 19]),
    "lambdalabs": ("lambdalabs", ["l" * 20], ["l" * 19]),
    "vastai": ("vastai", ["v" * 64], ["v" * 19]),
}


def test_every_rule_of_the_table_has_samples() -> None:
    assert set(SAMPLES) == {r.name for r in RULES}
    for rule in RULES:
        assert SAMPLES[rule.name][0] == rule.platform and rule.hint


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_each_rule_accepts_and_refuses_its_samples(name: str) -> None:
    (rule,) = [r for r in RULES if r.name == name]
    platform, good, bad = SAMPLES[name]
    for value in good:
        assert rule.matches(value), value
        check_credential(platform, value)
    for value in bad:
        assert not rule.matches(value), value
        with pytest.raises(errors.InvalidCredential) as info:
            check_credential(platform, value)
        message = info.value.message
        assert rule.hint in message and name in message.split("(rule ")[1]
        assert "--no-validate" in message and "validate=False" in message
        assert value not in message


def test_every_wandb_format_is_valid_and_a_refusal_names_each() -> None:
    assert [r.name for r in rules_for("wandb")] == ["wandb-v1", "wandb-legacy", "wandb-server"]
    assert is_valid_credential("wandb", WANDB_V1) and is_valid_credential("wandb", "f" * 40)
    assert is_valid_credential("wandb", "local-" + "f" * 40)  # W&B Server, which wandb accepts
    assert is_valid_credential("weights-and-biases", WANDB_V1)  # an alias has its platform's rules
    with pytest.raises(errors.InvalidCredential) as info:
        check_credential("wandb", "x" * 50)
    assert info.value.message == (
        "W&B keys are 'wandb_v1_' and 77 letters, digits or '_' (86 characters); "
        "or legacy W&B keys are 40 characters; or W&B Server keys are 'local-' and 40 letters or digits "
        "(rule wandb-v1 or wandb-legacy or wandb-server); "
        "to store it anyway: --no-validate (validate=False from Python)"
    )


def test_generic_refusals_say_how_to_store_anyway_too() -> None:
    with pytest.raises(errors.InvalidCredential) as info:
        check_credential("myplatform", "has\x01control")
    assert "rule generic" in info.value.message and "--no-validate" in info.value.message
    assert rules_for("myplatform") == () and rules_for("wandb", "token") == ()
