"""Fault injection for crash tests. TEST-ONLY: never set this in real use.

``CREDENTIAL_AGENT_FAULT=<name>`` makes the agent ``os._exit`` the moment it
reaches the point of that name, as a crash or ``kill -9`` would at that step: no
cleanup, no flush, no reply. Tests use it to show that a crash between the steps
of a multi-step operation (``agent rotate-key``) loses nothing. Points:

- ``rotate:after-keystore``: the new master key is in the OS keystore, the vault untouched;
- ``rotate:in-transaction``: every row is rewritten under the new key, not yet committed;
- ``rotate:after-vault``: the vault is committed under the new key, the old keystore entry remains.
"""

from __future__ import annotations

import os
from typing import Final

__all__ = ["ENV", "EXIT_CODE", "point"]

ENV: Final = "CREDENTIAL_AGENT_FAULT"
# distinctive, so a test can tell the injected crash from a real failure
EXIT_CODE: Final = 86


def point(name: str) -> None:
    """Exit at once if the test-only fault ``name`` is armed."""
    if os.environ.get(ENV) == name:
        os._exit(EXIT_CODE)
