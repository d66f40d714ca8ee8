"""Platform names: case-insensitive, with one canonical name per platform.

Rules of this module: pure functions and one table, no I/O. Both sides call
``canonical_platform`` at their boundary (the client before a request leaves, the
agent's handlers when it arrives), so the vault holds canonical names only.

- a name is lower-cased (``HF`` is ``hf``); ``ALIASES`` then maps a known alias to
  its platform's canonical name (``hf`` and ``hugging-face`` are ``huggingface``);
  any other name is only lower-cased;
- credential types are kept as given, but for the default type's other spellings
  (``api_key``, ``API-KEY``), which are ``api-key`` (``canonical_type``);
- a name that is not ASCII is left alone, for ``check_name`` to refuse (lower-casing
  could turn it into a legal one: ``"\\u212a"``, the Kelvin sign, lowers to ``k``).

``keyring-`` names (``client.keyring_names``) are lower case by construction, so
the keyring backend's names pass through unchanged.
"""

from __future__ import annotations

__all__ = ["ALIASES", "CANONICAL", "canonical_platform", "canonical_type"]

# alias -> canonical name; the canonical names are those of docs/cli.md (Platform names) and the validation rules
# (no typing import: the client loads this module for its first request)
ALIASES: dict[str, str] = {
    "hf": "huggingface",
    "hugging-face": "huggingface",
    "hugging_face": "huggingface",
    "huggingface-hub": "huggingface",
    "huggingface_hub": "huggingface",
    "weights-and-biases": "wandb",
    "weights_and_biases": "wandb",
    "weightsandbiases": "wandb",
    "w-and-b": "wandb",
    "lambda": "lambdalabs",
    "lambda-labs": "lambdalabs",
    "lambda_labs": "lambdalabs",
    "vast": "vastai",
    "vast-ai": "vastai",
    "vast_ai": "vastai",
    "run-pod": "runpod",
    "run_pod": "runpod",
}
CANONICAL = frozenset(ALIASES.values())


def canonical_platform(name: str) -> str:
    """The one name a platform is stored under: ``HF`` -> ``huggingface``, ``MyTool`` -> ``mytool``."""
    if type(name) is not str or not name.isascii():
        return name  # for check_name to refuse with its own message
    lowered = name.lower()
    return ALIASES.get(lowered, lowered)


def canonical_type(name: str) -> str:
    """``api_key`` and ``API-KEY`` -> ``api-key`` (the default type); any other type as given."""
    if type(name) is str and name.isascii() and name.lower().replace("_", "-") == "api-key":
        return "api-key"
    return name
