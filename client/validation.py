"""Credential and name validation: pure functions, usable without an agent.

Rules of this module: no I/O; a failure message names the rule that failed and
never contains the value.
"""

from __future__ import annotations

import math
import re

from client import errors
from client.protocol import DEFAULT_TYPE, MAX_NAME

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Final

__all__ = [
    "check_name",
    "check_credential",
    "check_metadata",
    "is_valid_credential",
    "canonical_platform",
    "DEFAULT_TYPE",
    "MAX_METADATA_DEPTH",
    "MAX_METADATA_ITEMS",
    "MAX_METADATA_BYTES",
]

# ASCII letters, digits, '-' and '_': what every keystore, file name and Windows
# credential target accepts ("The stub received bad data" otherwise).
_NAME_RE: Final = re.compile(rf"[A-Za-z0-9_-]{{1,{MAX_NAME}}}")
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
# Metadata is a note beside a key (scopes, owner, expiry hints): a few levels deep at
# most. Without a bound, a map nested a thousand deep is stored and then breaks
# every `list`, `show --json` and export (json and repr recurse past Python's limit).
MAX_METADATA_DEPTH: Final = 8
# Every credential's metadata travels in one `list` reply (a 256 KiB frame): keep
# each one small so a listing of many credentials still fits.
MAX_METADATA_ITEMS: Final = 256
MAX_METADATA_BYTES: Final = 4096  # of text (keys, strings, bytes)


def check_name(name: object, what: str = "platform") -> str:
    """Return ``name`` if it is a legal platform or credential-type name, else raise."""
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise errors.BadRequest(
            f"invalid {what} name: use 1 to {MAX_NAME} ASCII letters, digits, '-' or '_'"
        )
    return name


def check_metadata(metadata: object) -> dict[str, object]:
    """Return ``metadata`` if it is a JSON-like, string-keyed map of bounded depth and size, else raise."""
    if not isinstance(metadata, dict):
        raise errors.BadRequest("metadata must be a map")
    items = size = 0
    stack: list[tuple[object, int]] = [(metadata, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, float) and not math.isfinite(node):
            raise errors.BadRequest("metadata numbers must be finite (it is exported as JSON)")
        if node is not None and not isinstance(node, (str, int, float, dict, list, tuple)):
            # bytes and msgpack extension types have no JSON form: exports would fail
            raise errors.BadRequest("metadata may hold only strings, numbers, booleans, nil, arrays and maps")
        if isinstance(node, str):
            size += len(node)
            if size > MAX_METADATA_BYTES:
                raise errors.BadRequest(f"metadata may hold at most {MAX_METADATA_BYTES} characters of text")
        elif isinstance(node, (dict, list, tuple)):
            if depth > MAX_METADATA_DEPTH:
                raise errors.BadRequest(f"metadata may nest at most {MAX_METADATA_DEPTH} levels deep")
            children = list(node.values()) if isinstance(node, dict) else list(node)
            if isinstance(node, dict) and not all(isinstance(k, str) for k in node):
                raise errors.BadRequest("metadata keys must be strings")
            items += len(children)
            if items > MAX_METADATA_ITEMS:
                raise errors.BadRequest(f"metadata may hold at most {MAX_METADATA_ITEMS} items")
            stack.extend((child, depth + 1) for child in children)
            if isinstance(node, dict):
                stack.extend((k, depth) for k in node)
    return metadata


def canonical_platform(platform: str) -> str:
    """The platform a name stands for, for picking its rules (``hf`` -> ``huggingface``)."""
    lowered = platform.lower()
    return _ALIASES.get(lowered, lowered)


def check_credential(platform: str, value: object, credential_type: str = DEFAULT_TYPE) -> None:
    """Raise ``InvalidCredential`` naming the failed rule; never includes the value.

    The platform rules describe API keys, so they apply to the default type only;
    every type gets the generic rule (non-empty, no whitespace or control characters).
    """
    if not isinstance(value, str) or not value:
        raise errors.InvalidCredential("the credential is empty")
    if _BAD_CHARS_RE.search(value):
        raise errors.InvalidCredential("the credential contains whitespace or control characters")
    if credential_type != DEFAULT_TYPE:
        return
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
