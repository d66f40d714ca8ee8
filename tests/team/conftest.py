"""The team-vault suites' fixtures: agents with a ``team`` remote, stopped after each test."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from support import AgentProcess
from support.openbao import TeamAgent, start_team_agent


@pytest.fixture
def team_agent() -> Iterator[TeamAgent]:
    """``team_agent(urls, login=TOKEN, **remote_options)``: a running, unlocked agent whose
    remote ``team`` is ``urls`` (see ``support.openbao.start_team_agent``); every agent made
    is stopped and its home removed when the test ends."""
    made: list[AgentProcess] = []

    def make(urls: list[str], login: str | None = None, **options: Any) -> AgentProcess:
        a = start_team_agent(urls, login=login, **options)
        made.append(a)
        return a

    yield make
    for a in made:
        a.cleanup()
