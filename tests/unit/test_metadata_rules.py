"""Metadata bounds (pure rules): a note beside a key, never a structure that breaks listings."""

from __future__ import annotations

import json

import pytest

from client import errors
from client.validation import MAX_METADATA_BYTES, MAX_METADATA_DEPTH, MAX_METADATA_ITEMS, check_metadata


def nested(depth: int) -> dict[str, object]:
    node: object = "leaf"
    for _ in range(depth - 1):
        node = [node]
    return {"m": node}


def test_ordinary_metadata_passes() -> None:
    meta = {"scopes": ["read", "write"], "owner": "ml-team", "expires": 1_900_000_000, "nested": {"a": {"b": 1}}}
    assert check_metadata(meta) is meta


def test_depth_limit() -> None:
    check_metadata(nested(MAX_METADATA_DEPTH))
    with pytest.raises(errors.BadRequest, match="levels deep"):
        check_metadata(nested(MAX_METADATA_DEPTH + 1))
    # what the bound prevents: a value json (CLI --json, export) cannot even print
    with pytest.raises(RecursionError):
        json.dumps(nested(1500))
    with pytest.raises(errors.BadRequest):
        check_metadata(nested(1500))


def test_size_limits() -> None:
    with pytest.raises(errors.BadRequest, match="characters"):
        check_metadata({"note": "x" * (MAX_METADATA_BYTES + 1)})
    with pytest.raises(errors.BadRequest, match="items"):
        check_metadata({"l": list(range(MAX_METADATA_ITEMS + 1))})
    with pytest.raises(errors.BadRequest, match="keys must be strings"):
        check_metadata({"a": {1: 2}})
    with pytest.raises(errors.BadRequest, match="must be a map"):
        check_metadata(["not", "a", "map"])


@pytest.mark.parametrize("bad", [{"b": b"bytes"}, {"n": float("nan")}, {"i": float("inf")}, {"o": object()},
                                 {"l": [1, {"x": b"\x00"}]}])
def test_only_json_like_values(bad: dict[str, object]) -> None:
    with pytest.raises(errors.BadRequest):
        check_metadata(bad)


def test_accepted_metadata_always_exports_as_json() -> None:
    meta = {"s": "é", "i": -(2**63), "f": 1.5, "b": True, "n": None, "l": [1, [2, {"k": "v"}]], "t": (1, 2)}
    check_metadata(meta)
    assert json.loads(json.dumps(meta, allow_nan=False))["s"] == "é"
