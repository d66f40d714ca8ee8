"""`list` in pages: a listing of many credentials with the largest metadata the
validation rules allow goes through every client, page by page, each page provably
within one frame."""

from __future__ import annotations

import json
import math

import msgpack
import pytest

from client import AsyncClient, CredentialService, errors, protocol, validation, vocabulary
from client.messages import ListPages
from support import AgentProcess

# an astral character: one character to the validation rules, four bytes of UTF-8
ASTRAL = 0x1F600


def largest_metadata(seed: int) -> dict[str, object]:
    """Metadata at the limits: 255 one-character keys (the text budget allows it),
    254 floats of 9 bytes each, and the rest of the 4096 characters in one string."""
    keys = [chr(ASTRAL + i) for i in range(validation.MAX_METADATA_ITEMS - 1)]
    meta: dict[str, object] = {k: seed + i / 7 for i, k in enumerate(keys[:-1])}
    meta[keys[-1]] = chr(ASTRAL + 300 + seed % 50) * (validation.MAX_METADATA_BYTES - len(keys))
    return validation.check_metadata(meta)


def entry(platform: str, meta: dict[str, object]) -> dict[str, object]:
    return {"platform": platform, "credential_type": "x" * 64, "created": 1.5e9 + 0.1, "updated": 1.5e9 + 0.2,
            "expires_at": 1.5e9 + 0.3, "metadata": meta}


def test_a_page_of_the_largest_entries_fits_one_frame() -> None:
    # the bound on one metadata, from the validation limits: each item a value of at
    # most 15 bytes (a scalar: 9; a msgpack Timestamp: 15) or a header of at most 3,
    # under a key whose header is at most 3; every character 4 bytes of UTF-8
    bound = 5 + validation.MAX_METADATA_ITEMS * (15 + 3) + 4 * validation.MAX_METADATA_BYTES
    assert bound == vocabulary._METADATA_MAX
    fields = len(msgpack.packb(entry("p" * 64, {}), use_bin_type=True))
    assert fields <= vocabulary._ENTRY_FIELDS_MAX
    assert protocol.LIST_PAGE >= 10  # few round trips for a listing
    assert protocol.LIST_PAGE * (vocabulary._ENTRY_FIELDS_MAX + bound) + 64 <= protocol.MAX_FRAME
    # and a real page of near-worst entries: within the frame, which a page more is not
    meta = largest_metadata(0)
    assert len(msgpack.packb(meta, use_bin_type=True)) <= bound
    assert len(msgpack.packb(meta, use_bin_type=True)) > 0.85 * bound  # the example is near the bound
    page = [entry(f"{i:0>64}", largest_metadata(i)) for i in range(protocol.LIST_PAGE)]
    protocol.encode_ok(page)  # raises if it does not fit
    whole = [entry(f"{i:0>64}", largest_metadata(i)) for i in range(math.ceil(protocol.MAX_FRAME / bound) + 1)]
    with pytest.raises(errors.BadRequest):
        protocol.encode_ok(whole)


COUNT = 80


@pytest.fixture
def crowded_agent(unlocked_agent: AgentProcess) -> AgentProcess:
    with unlocked_agent.client(timeout=60) as c:
        results = c.call_many([
            ("store", {"platform": f"p{i:02d}", "value": "v" * 24, "metadata": largest_metadata(i)})
            for i in range(COUNT)
        ])
    assert not [r for r in results if isinstance(r, errors.AgentError)]
    return unlocked_agent


def check_listing(entries: list[dict[str, object]]) -> None:
    assert [e["platform"] for e in entries] == [f"p{i:02d}" for i in range(COUNT)]
    assert entries[7]["metadata"] == largest_metadata(7)


def test_a_listing_larger_than_a_frame_goes_through_every_client(crowded_agent: AgentProcess) -> None:
    with crowded_agent.client(timeout=30) as c:
        check_listing(c.list())
        assert c.credentials_for("p42") == {"api_key": "v" * 24}
        # an unpaged `list`, as an older client sends it, still fails on so large a listing
        with pytest.raises(errors.Internal):
            c.call("list")
    assert CredentialService(crowded_agent.client(timeout=30)).list_platforms() == [f"p{i:02d}" for i in range(COUNT)]
    done = crowded_agent.cli("ls", "--json")
    assert done.returncode == 0, done.stderr
    check_listing(json.loads(done.stdout))


async def test_a_listing_larger_than_a_frame_goes_through_the_async_client(crowded_agent: AgentProcess) -> None:
    async with AsyncClient(crowded_agent.socket, autostart=False, timeout=30) as c:
        check_listing(await c.list())
        assert await c.credentials_for("p42") == {"api_key": "v" * 24}


def test_list_pages_on_the_wire(unlocked_agent: AgentProcess) -> None:
    with unlocked_agent.client(timeout=30) as c:
        for i in range(5):
            c.store(f"q{i}", "v" * 24)
        names = lambda r: [e["platform"] for e in r]  # noqa: E731
        assert names(c.call("list")) == ["q0", "q1", "q2", "q3", "q4"]  # no args: everything, as before
        assert names(c.call("list", {"offset": 1, "limit": 2})) == ["q1", "q2"]
        assert names(c.call("list", {"offset": 3})) == ["q3", "q4"]
        assert names(c.call("list", {"limit": 0})) == []
        assert names(c.call("list", {"offset": 9, "limit": 3})) == []
        for bad in ({"offset": -1}, {"limit": -2}, {"offset": "1"}, {"limit": 1.5}):
            with pytest.raises(errors.BadRequest):
                c.call("list", bad)
        assert c.status()["locked"] is False  # and the agent keeps serving


def serve(listing: list[dict[str, str]], args: dict[str, object], agent: str) -> list[dict[str, str]]:
    """One page as an agent answers ``args``: one that knows the cursor ("cursor"), one
    that predates it and pages by offset ("offset"), or one that predates paging and
    sends the whole listing whatever it is asked ("whole")."""
    if agent == "whole":
        return listing
    limit = args["limit"]
    assert isinstance(limit, int)
    if agent == "cursor" and "after" in args:
        after = tuple(args["after"])  # type: ignore[arg-type]
        return [e for e in listing if (e["platform"], e["credential_type"]) > after][:limit]
    offset = args["offset"]
    assert isinstance(offset, int)
    return listing[offset : offset + limit]


def run_pages(listing: list[dict[str, str]], agent: str) -> list[dict[str, str]]:
    pages = ListPages()
    asked = 0
    while (args := pages.next_args()) is not None:
        asked += 1
        assert asked < 100
        pages.add(serve(listing, args, agent))
    return pages.entries


@pytest.mark.parametrize("n", [0, 1, protocol.LIST_PAGE - 1, protocol.LIST_PAGE, protocol.LIST_PAGE + 1,
                               3 * protocol.LIST_PAGE, 3 * protocol.LIST_PAGE + 5])
@pytest.mark.parametrize("agent", ["cursor", "offset", "whole"])
def test_list_pages_end(n: int, agent: str) -> None:
    listing = [{"platform": f"p{i:03d}", "credential_type": "api-key"} for i in range(n)]
    assert run_pages(listing, agent) == listing


@pytest.mark.parametrize("agent", ["cursor", "offset"])
def test_an_entry_added_between_pages_is_not_listed_twice(agent: str) -> None:
    listing = [{"platform": f"p{i:03d}", "credential_type": "api-key"} for i in range(2 * protocol.LIST_PAGE)]
    pages = ListPages()
    args = pages.next_args()
    assert args == {"offset": 0, "limit": protocol.LIST_PAGE}
    pages.add(listing[: protocol.LIST_PAGE])
    listing.insert(0, {"platform": "a", "credential_type": "api-key"})  # shifts every later entry
    listing.append({"platform": "z", "credential_type": "api-key"})  # after the cursor
    while (args := pages.next_args()) is not None:
        assert args["after"] == [pages.entries[-1]["platform"], "api-key"]  # the last name seen
        pages.add(serve(listing, args, agent))
    assert pages.entries == listing[1:]
