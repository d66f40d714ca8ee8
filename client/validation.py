"""Credential and name validation: pure functions, usable without an agent.

Rules of this module: no I/O; a failure message names the rule that failed and
never contains the value.
"""

from __future__ import annotations

import re
from typing import Final

from client import errors
from client.protocol import DEFAULT_TYPE

__all__ = ["check_name", "check_credential", "is_valid_credential", "canonical_platform", "DEFAULT_TYPE"]

# ASCII letters, digits, '-' and '_': what every keystore, file name and Windows
# credential target accepts ("The stub received bad data" otherwise).
_NAME_RE: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
# whitespace or control characters anywhere in a key means a paste went wrong
_BAD_CHARS_RE: Final = re.compile(r"[\s\x00-\x1f\x7f-\x9f]")

_ALIASES: Final = {
    "hf": "huggingface",
    "hugging-face": "huggingface",
    "hugging_face": "huggingface",
    "lambda": "lambdalabs",
    "lambda-labs": "lambdalabs",
    "lambda_labs": "lambdalabs",
    "vast": "vastai",
    "vast-ai": "vastai",
    "vast_ai": "vastai",
    "weights-and-biases": "wandb",
}
_MIN_LENGTH: Final = {"runpod": 20, "lambdalabs": 20, "vastai": 20}


def check_name(name: object, what: str = "platform") -> str:
    """Return ``name`` if it is a legal platform or credential-type name, else raise."""
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise errors.BadRequest(
            f"invalid {what} name: use 1 to 64 ASCII letters, digits, '-' or '_'"
        )
    return name


def canonical_platform(platform: str) -> str:
    """The platform a name stands for, for picking its rules (``hf`` -> ``huggingface``)."""
    lowered = platform.lower()
    return _ALIASES.get(lowered, lowered)


def check_credential(platform: str, value: object) -> None:
    """Raise ``InvalidCredential`` naming the failed rule; never includes the value."""
    if not isinstance(value, str) or not value:
        raise errors.InvalidCredential("the credential is empty")
    if _BAD_CHARS_RE.search(value):
        raise errors.InvalidCredential("the credential contains whitespace or control characters")
    rule = canonical_platform(platform)
    if rule == "huggingface" and not value.startswith("hf_"):
        raise errors.InvalidCredential("Hugging Face tokens start with 'hf_'")
    if rule == "wandb" and len(value) != 40:
        raise errors.InvalidCredential("Weights & Biases API keys are 40 characters long")
    minimum = _MIN_LENGTH.get(rule)
    if minimum is not None and len(value) < minimum:
        raise errors.InvalidCredential(f"{platform} keys are at least {minimum} characters long")


def is_valid_credential(platform: str, value: object) -> bool:
    try:
        check_credential(platform, value)
    except errors.InvalidCredential:
        return False
    return True
