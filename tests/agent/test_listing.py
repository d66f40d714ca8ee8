"""Listing in pages without sorting per page: the agent sorts its names once (it says how
many times in ``status``: ``listing_sorts``) and keeps them in order as credentials come
and go; a page after a cursor neither repeats nor skips an entry when the vault changes
between pages; a client that pages by offset still lists everything."""

from __future__ import annotations

import pytest

from client import errors, protocol
from support import AgentProcess

PAGE = protocol.LIST_PAGE
COUNT = 5 * PAGE + 3


@pytest.fixture
def filled(unlocked_agent: AgentProcess) -> AgentProcess:
    with unlocked_agent.client(timeout=60) as c:
        # stored out of name order
        replies = c.call_many([("store", {"platform": f"p{i:03d}", "value": "v" * 24}) for i in reversed(range(COUNT))])
    assert not [r for r in replies if isinstance(r, errors.AgentError)]
    return unlocked_agent


def names(entries: list[dict[str, object]]) -> list[str]:
    return [str(e["platform"]) for e in entries]


def test_a_listing_sorts_once_not_once_per_page(filled: AgentProcess) -> None:
    with filled.client() as c:
        before = c.status()["listing_sorts"]
        assert names(c.list()) == [f"p{i:03d}" for i in range(COUNT)]  # 6 pages
        assert c.status()["listing_sorts"] - before == 1
        assert names(c.list()) == [f"p{i:03d}" for i in range(COUNT)]
        # credentials added, renamed and removed keep the order without a sort
        c.store("a-first", "v" * 24)
        c.store("p020x", "v" * 24)
        c.rename("p005", "zz-last")
        c.delete("p010")
        expected = sorted({*(f"p{i:03d}" for i in range(COUNT)), "a-first", "p020x", "zz-last"} - {"p005", "p010"})
        assert names(c.list()) == expected
        assert c.status()["listing_sorts"] - before == 1
        # a lock drops the entries and an unlock opens every row again: one sort at the
        # next listing after each
        c.lock()
        assert names(c.list()) == expected  # names only, while locked
        assert names(c.list()) == expected
        c.unlock("correct horse battery staple")
        assert names(c.list()) == expected
        assert c.status()["listing_sorts"] - before == 3


def test_a_page_after_a_cursor_is_consistent_when_the_vault_changes(filled: AgentProcess) -> None:
    with filled.client() as c:
        first = c.call("list", {"offset": 0, "limit": PAGE})
        assert names(first) == [f"p{i:03d}" for i in range(PAGE)]
        last = [first[-1]["platform"], first[-1]["credential_type"]]
        c.store("a-before", "v" * 24)  # sorts before the cursor: not in later pages
        c.store("p999", "v" * 24)  # after it: listed when its page comes
        c.delete(f"p{PAGE:03d}")  # the next one after the cursor: gone, nothing skipped for it
        rest: list[dict[str, object]] = []
        while True:
            page = c.call("list", {"offset": 0, "limit": PAGE, "after": last})
            rest += page
            if len(page) < PAGE:
                break
            last = [page[-1]["platform"], page[-1]["credential_type"]]
        assert names(rest) == [f"p{i:03d}" for i in range(PAGE + 1, COUNT)] + ["p999"]
        assert all(e["source"] == "local" for e in rest)
        # a cursor that names no credential, and one past every name
        assert names(c.call("list", {"after": ["p0305", "api-key"], "limit": 2})) == ["p031", "p032"]
        assert names(c.call("list", {"after": ["p030", "zzz"], "limit": 2})) == ["p031", "p032"]
        assert names(c.call("list", {"after": ["zzz", "api-key"], "limit": 2})) == []
        for bad in (["p001"], ["p001", 3], "p001", ["a", "b", "c"]):
            with pytest.raises(errors.BadRequest):
                c.call("list", {"after": bad, "limit": 2})
        assert c.status()["locked"] is False  # and the agent keeps serving


def test_a_client_that_pages_by_offset_still_lists_everything(filled: AgentProcess) -> None:
    with filled.client() as c:
        seen: list[dict[str, object]] = []
        while True:
            page = c.call("list", {"offset": len(seen), "limit": PAGE})  # as clients before the cursor ask
            seen += page
            if len(page) < PAGE:
                break
        assert names(seen) == [f"p{i:03d}" for i in range(COUNT)]
        assert names(c.call("list")) == names(seen)  # and the whole listing in one reply, as before


def test_a_locked_agent_holds_no_entry_until_a_listing_asks(filled: AgentProcess) -> None:
    with filled.client() as c:
        assert c.status()["entries_held"] == COUNT
        c.lock()
        status = c.status()
        assert status["entries_held"] == 0 and status["credentials"] == COUNT  # counted by the vault
        listed = c.list()  # names and times, read from the vault
        assert names(listed) == [f"p{i:03d}" for i in range(COUNT)] and "metadata" not in listed[0]
        assert c.status()["entries_held"] == COUNT
    filled.stop()
    filled.start()  # a restarted agent, locked, reads no row before it answers
    with filled.client() as c:
        status = c.status()
        assert status["locked"] and status["entries_held"] == 0 and status["credentials"] == COUNT
        c.unlock("correct horse battery staple")
        assert c.status()["entries_held"] == COUNT
        assert c.list()[0]["metadata"] == {}
        assert c.get("p007") == "v" * 24
