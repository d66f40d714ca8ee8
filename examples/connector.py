"""An example connector: its credentials come from the agent in one call.

    agent set runpod                 # once: the key, from a hidden prompt
    python examples/connector.py runpod

The connector never sees a keystore, an ``.env`` file or a prompt: it asks the
agent (started on first use) for everything stored under its platform and gets
``{"api_key": "..."}``, the dict ``connect(credentials)`` takes.
"""

from __future__ import annotations

import asyncio
import sys

import client


class PlatformConnector:
    """The shape of a connector: a platform name and ``connect(credentials)``."""

    def __init__(self, platform: str) -> None:
        self.platform = platform
        self.api_key: str | None = None

    def connect(self, credentials: dict[str, str]) -> bool:
        self.api_key = credentials["api_key"]
        return True

    def __repr__(self) -> str:  # never show the key
        return f"PlatformConnector({self.platform!r}, connected={self.api_key is not None})"


async def main(platform: str) -> int:
    connector = PlatformConnector(platform)
    try:
        async with client.AsyncClient() as agent:
            credentials = await agent.credentials_for(platform)  # one call: {"api_key": ...}
    except client.NotFound:
        print(f"no key for {platform}: store one with `agent set {platform}`", file=sys.stderr)
        return 1
    except client.AgentError as e:  # locked, no agent, ...
        print(f"cannot get the {platform} key: {e}", file=sys.stderr)
        return 1
    connector.connect(credentials)
    print(f"{connector!r}: fields {sorted(credentials)}, api_key of {len(credentials['api_key'])} characters")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "runpod")))
