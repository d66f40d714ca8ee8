from __future__ import annotations

import pytest

from client import errors
from client.validation import check_credential, check_name, is_valid_credential


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
