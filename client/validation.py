"""Credential and name validation: pure functions, usable without an agent.

Rules of this module: no I/O; a failure message names the rule that failed and
never contains the value.
"""

from __future__ import annotations

import math
import re

from client import errors
from client.names import canonical_platform
from client.protocol import DEFAULT_TYPE, MAX_NAME

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Final

__all__ = [
    "Rule",
    "RULES",
    "rules_for",
    "check_name",
    "check_key",
    "check_credential",
    "check_characters",
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
# whitespace or control characters anywhere in a key of a platform with rules means
# a paste went wrong; any other value (a PEM key, a service-account JSON, a phrase)
# may hold spaces, tabs and line breaks, but no other control character
_BAD_CHARS_RE: Final = re.compile(r"[\s\x00-\x1f\x7f-\x9f]")
_CONTROL_RE: Final = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


class Rule:
    """One format an API key of a platform may have. A key passes its platform's
    check when it matches any of the platform's rules.

    ``chars`` is a regex character class for what follows the prefix (None: any
    character the generic rule allows); ``hint`` says what the key looks like.
    A plain slotted class, as ``client.protocol.Arg``: see the imports there.
    """

    __slots__ = ("_rest", "chars", "hint", "max_length", "min_length", "name", "platform", "prefix")

    def __init__(
        self,
        name: str,
        platform: str,
        hint: str,
        *,
        prefix: str = "",
        min_length: int = 1,
        max_length: int | None = None,
        chars: str | None = None,
    ) -> None:
        self.name = name
        self.platform = platform
        self.hint = hint
        self.prefix = prefix
        self.min_length = min_length
        self.max_length = max_length
        self.chars = chars
        self._rest = None if chars is None else re.compile(f"[{chars}]*")

    def __repr__(self) -> str:
        return f"Rule({self.name!r})"

    def matches(self, value: str) -> bool:
        if not value.startswith(self.prefix) or len(value) < self.min_length:
            return False
        if self.max_length is not None and len(value) > self.max_length:
            return False
        return self._rest is None or self._rest.fullmatch(value, len(self.prefix)) is not None


# Every platform rule, as data; a platform (by its canonical name) not here has the
# generic rule only. W&B issues 86-character keys now; 40-character ones are legacy;
# a W&B Server (self-hosted) key is 'local-' and 40 characters.
RULES: Final = (
    Rule("huggingface", "huggingface", "Hugging Face tokens start with 'hf_'", prefix="hf_"),
    Rule(
        "wandb-v1",
        "wandb",
        "W&B keys are 'wandb_v1_' and 77 letters, digits or '_' (86 characters)",
        prefix="wandb_v1_",
        min_length=86,
        max_length=86,
        chars="A-Za-z0-9_",
    ),
    Rule("wandb-legacy", "wandb", "legacy W&B keys are 40 characters", min_length=40, max_length=40),
    Rule(
        "wandb-server",
        "wandb",
        "W&B Server keys are 'local-' and 40 letters or digits",
        prefix="local-",
        min_length=46,
        max_length=46,
        chars="A-Za-z0-9",
    ),
    Rule("runpod", "runpod", "RunPod keys are at least 20 characters long", min_length=20),
    Rule("lambdalabs", "lambdalabs", "Lambda Labs keys are at least 20 characters long", min_length=20),
    Rule("vastai", "vastai", "Vast.ai keys are at least 20 characters long", min_length=20),
)
_BY_PLATFORM: Final[dict[str, tuple[Rule, ...]]] = {
    p: tuple(r for r in RULES if r.platform == p) for p in dict.fromkeys(r.platform for r in RULES)
}
# what every refusal ends with: how to store the value all the same
STORE_ANYWAY: Final = "to store it anyway: --no-validate (validate=False from Python)"
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
        raise errors.BadRequest(f"invalid {what} name: use 1 to {MAX_NAME} ASCII letters, digits, '-' or '_'")
    return name


def check_key(platform: object, credential_type: object) -> tuple[str, str]:
    """A credential's name, ``(platform, credential_type)``, if both parts are legal names, else raise."""
    return check_name(platform), check_name(credential_type, "credential type")


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


def rules_for(platform: str, credential_type: str = DEFAULT_TYPE) -> tuple[Rule, ...]:
    """The platform rules a credential must match one of (none: the generic rule only).
    They describe API keys, so they apply to the default type only."""
    if credential_type != DEFAULT_TYPE:
        return ()
    return _BY_PLATFORM.get(canonical_platform(platform), ())


def _refuse(why: str, rules: str) -> errors.InvalidCredential:
    return errors.InvalidCredential(f"{why} (rule {rules}); {STORE_ANYWAY}")


def check_credential(platform: str, value: object, credential_type: str = DEFAULT_TYPE) -> None:
    """Raise ``InvalidCredential`` naming the failed rule and how to store anyway;
    never includes the value.

    The platform rules describe API keys, so they apply to the default type only (and
    so does their ban on whitespace): an API key must match one of its platform's
    ``RULES``. Every value gets the generic rule: non-empty, no control characters
    but tabs and line breaks (a PEM key, a service-account JSON, a phrase).
    """
    check_characters(platform, value, credential_type)
    assert isinstance(value, str)  # check_characters refused anything else
    rules = rules_for(platform, credential_type)
    if rules and not any(r.matches(value) for r in rules):
        raise _refuse("; or ".join(r.hint for r in rules), " or ".join(r.name for r in rules))


def check_characters(platform: str, value: object, credential_type: str = DEFAULT_TYPE) -> None:
    """The part of ``check_credential`` no value may fail, whatever its format: non-empty,
    no control characters but tabs and line breaks, and no whitespace in an API key of a
    platform with rules (a value fetched from a team vault must pass it too)."""
    if not isinstance(value, str) or not value:
        raise errors.InvalidCredential("the credential is empty")
    rules = rules_for(platform, credential_type)
    if rules and _BAD_CHARS_RE.search(value):
        names = " or ".join(r.name for r in rules)
        raise _refuse(f"{canonical_platform(platform)} keys contain no whitespace or control characters", names)
    if _CONTROL_RE.search(value):
        raise _refuse("the credential contains control characters (other than tabs and line breaks)", "generic")


def is_valid_credential(platform: str, value: object) -> bool:
    try:
        check_credential(platform, value)
    except errors.InvalidCredential:
        return False
    return True
