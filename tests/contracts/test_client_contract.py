"""Both clients pass the client contract (tests/contracts/client_contract.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from contracts.client_contract import Blocking, ClientContract

from client import AsyncClient, Client


class TestClient(ClientContract):
    def connect(self, path: Path, **kw: Any) -> Any:
        return Client(path, autostart=False, **kw)


class TestAsyncClient(ClientContract):
    def connect(self, path: Path, **kw: Any) -> Any:
        return Blocking(AsyncClient(path, autostart=False, **kw))
