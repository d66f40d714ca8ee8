"""Request builders and reply shaping shared by both clients (and the migration tool).

Rules of this module: functions of their arguments (and of the clock and the
environment, for expiry), no I/O, no client state; an argument the caller left
at its default is left out of the request, so the agent applies its own default
(and an agent that predates the argument still understands the request).
"""

from __future__ import annotations

import os
import time

from client import errors, protocol
from client.names import canonical_platform
from client.protocol import DEFAULT_TYPE

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

    Args = dict[str, Any]

__all__ = [
    "ON_EXPIRED",
    "ON_EXPIRED_ENV",
    "expiry_policy",
    "name_args",
    "given",
    "get_args",
    "write_args",
    "name_pair",
    "expired_on",
    "unwrap_get",
    "field_name",
    "credentials_of",
    "ListPages",
    "reply_none",
    "reply_map",
    "reply_rows",
    "reply_code",
    "reply_valid",
    "reply_reason",
    "reply_token",
    "reply_text",
]

# What `get` does with a credential past its expiry: log a warning and return it
# (default), raise `Expired`, or not ask the agent about expiry at all.
ON_EXPIRED = ("warn", "refuse", "ignore")
ON_EXPIRED_ENV = "CREDENTIAL_AGENT_ON_EXPIRED"


def name_args(platform: str, credential_type: str) -> Args:
    args: Args = {"platform": canonical_platform(platform)}
    if credential_type != DEFAULT_TYPE:
        args["credential_type"] = credential_type
    return args


def given(**args: Any) -> Args:
    """The arguments that were given: None means "not sent" (the agent's default)."""
    return {k: v for k, v in args.items() if v is not None}


def expiry_policy(explicit: str | None) -> str:
    """The caller's choice, else ``$CREDENTIAL_AGENT_ON_EXPIRED``, else ``warn``."""
    policy = explicit or os.environ.get(ON_EXPIRED_ENV) or "warn"
    if policy not in ON_EXPIRED:
        raise ValueError(f"on_expired must be one of {', '.join(ON_EXPIRED)}, got {policy!r}")
    return policy


def get_args(platform: str, credential_type: str, policy: str) -> Args:
    # name_args, inlined: this builds every `get`, the hot path
    args: Args = {"platform": canonical_platform(platform)}
    if credential_type != DEFAULT_TYPE:
        args["credential_type"] = credential_type
    if policy != "ignore":
        args["expiry"] = True
    return args


def name_pair(name: str | tuple[str, str]) -> tuple[str, str]:
    platform, ctype = (name, DEFAULT_TYPE) if isinstance(name, str) else name
    return canonical_platform(platform), ctype


# protocol.MAX_EXPIRES (9999-12-31 23:59:59 UTC): an expiry past it (or NaN, inf, not a
# number) is no date at all, which a well-behaved agent never stores; such a credential
# counts as expired on an unknown date rather than crashing the caller's strftime.
_LAST_DATE = protocol.MAX_EXPIRES


def expired_on(expires: Any) -> str | None:
    """None if ``expires`` (an ``expires_at`` from the agent) is absent or ahead, else
    the local date it passed, or ``"an unknown date"`` for a value no calendar shows."""
    if expires is None:
        return None
    if type(expires) not in (int, float) or not -_LAST_DATE <= expires <= _LAST_DATE:  # NaN fails both
        return "an unknown date"
    if expires > time.time():
        return None
    try:
        return time.strftime("%Y-%m-%d %H:%M", time.localtime(expires))
    except (OverflowError, OSError, ValueError):  # a year the platform's C library cannot show
        return "an unknown date"


def unwrap_get(result: Any, platform: str, credential_type: str, policy: str, warned: set[tuple[str, str]]) -> str:
    """The value from a `get` reply, applying the expiry policy."""
    if isinstance(result, str):  # policy "ignore", or an agent that predates expiry
        return result
    value: str = result["value"]
    when = expired_on(result.get("expires_at"))
    if when is not None:
        if policy == "refuse":
            raise errors.Expired(f"{platform}/{credential_type} expired on {when}; store a new one with `agent set`")
        if (platform, credential_type) not in warned:  # once per client, not once per call
            warned.add((platform, credential_type))
            import logging  # only here: most processes never need it

            logging.getLogger("client").warning(
                "credential %s/%s expired on %s; store a new one with `agent set`", platform, credential_type, when
            )
    return value


def field_name(credential_type: str) -> str:
    """``api-key`` -> ``api_key``: credential types as Python keyword-friendly keys."""
    return credential_type.replace("-", "_")


def credentials_of(platform: str, entries: list[dict[str, Any]]) -> list[str]:
    """The types stored for ``platform`` (a canonical name) in a listing."""
    types = [e["credential_type"] for e in entries if e["platform"] == platform]
    if not types:
        raise errors.NotFound(f"no credentials for {platform}; store one with `agent set {platform}`")
    return types


def write_args(
    platform: str,
    value: str,
    credential_type: str,
    metadata: Mapping[str, Any] | None,
    validate: bool,
    expires_at: float | None,
    *,
    keep: bool = False,
    merge: bool = False,
    clear_expiry: bool = False,
    remote: str | None = None,
) -> Args:
    """``keep``/``merge``: see ``store`` in ``client.protocol.OPS``; ``clear_expiry``
    sends ``expires_at`` nil (with ``keep``, the one way to drop a kept expiry)."""
    args = name_args(platform, credential_type)
    if remote is not None:
        args["remote"] = remote
    args["value"] = value
    if metadata is not None:
        args["metadata"] = dict(metadata)
    if not validate:
        args["validate"] = False
    if expires_at is not None or clear_expiry:
        args["expires_at"] = expires_at
    if keep:
        args["keep"] = True
    if merge:
        args["merge_metadata"] = True
    return args


class ListPages:
    """The paging of `list`: ask for pages until a short one.

    Each page after the first starts after the last name seen (``after``, a cursor the
    agent finds by bisection: a change between two pages neither repeats nor skips an
    entry that was there throughout); ``offset`` goes along for an agent that predates
    the cursor (it ignores ``after``). An agent that predates paging ignores offset/limit
    and sends everything at once (a page longer than asked for, or the same page again):
    both end the listing. Pages are cut by name order, so an entry seen twice (one added
    before it between two pages, on an agent that pages by offset) is skipped rather
    than listed twice."""

    __slots__ = ("_last", "_offset", "done", "entries")

    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []
        self.done = False
        self._offset = 0
        self._last: tuple[str, str] | None = None

    def next_args(self) -> dict[str, Any] | None:
        if self.done:
            return None
        args: dict[str, Any] = {"offset": self._offset, "limit": protocol.LIST_PAGE}
        if self._last is not None:
            args["after"] = list(self._last)
        return args

    def add(self, page: list[dict[str, Any]]) -> None:
        self._offset += len(page)
        if len(page) != protocol.LIST_PAGE:  # the last page, or a whole listing from an older agent
            self.done = True
        if self._last is not None and len(page) > protocol.LIST_PAGE:
            self.entries.clear()  # an older agent's whole listing: it replaces the pages
            self._last = None
        last = self._last
        new = [e for e in page if last is None or (e["platform"], e["credential_type"]) > last]
        if not new:
            self.done = True
            return
        self.entries.extend(new)
        self._last = (new[-1]["platform"], new[-1]["credential_type"])


# --- replies of single-request operations: reply(client, args, result) -> the method's result
def reply_none(client: Any, args: Args, result: Any) -> None:
    return None


def reply_map(client: Any, args: Args, result: Any) -> dict[str, Any]:
    shaped: dict[str, Any] = result
    return shaped


def reply_rows(client: Any, args: Args, result: Any) -> list[dict[str, Any]]:
    shaped: list[dict[str, Any]] = result
    return shaped


def reply_code(client: Any, args: Args, result: Any) -> str:
    return str(result["code"])


def reply_valid(client: Any, args: Args, result: Any) -> bool:
    return bool(result["valid"])


def reply_reason(client: Any, args: Args, result: Any) -> str | None:
    """None for a value that passes; else the agent's reason."""
    return None if result["valid"] else str(result["reason"])


def reply_token(client: Any, args: Args, result: Any) -> bytes:
    return bytes(result)


def reply_text(client: Any, args: Args, result: Any) -> str:
    return str(result)
