"""What the agent shows of its team vaults: listing entries (never values) and status.

A team key is listed once, with ``"source": NAME``, when it is what ``get`` would
return: not shadowed by a local key of the same name, nor by an earlier remote. A
listing's pages merge the local names (kept in order by ``agent.state.Entries``) with
the team names as sorted at its first page: no page sorts or walks the whole listing,
and a first page sorts them only if a cache's names changed since they were last sorted
(``Cache.names_at``), so a listing holds the event loop no longer than a page does.
"""

from __future__ import annotations

import bisect
import itertools
import time
from collections.abc import Iterator
from typing import Any

from agent.remotes import offline, refresh, sealed, team
from agent.state import Agent, Key
from agent.stores import VaultMeta
from client import errors
from client.validation import check_metadata

__all__ = ["names", "page", "describe", "status"]


def names(remotes: team.Remotes, fresh: bool) -> tuple[list[Key], list[str]]:
    """The names of the team keys that resolve to a remote, sorted, and each one's remote:
    at a listing's first page (``fresh``) sorted again if a cache's names changed since,
    and kept for its later pages, which find their place in it by name. A local key of
    the same name shadows one of these at the time of the page, not of the sort; a key
    gone from the cache since is skipped, and one come since waits for the next listing."""
    held, at = remotes.listing_names, tuple(r.cache.names_at for r in remotes.remotes)
    if held is not None and (not fresh or remotes.listing_of == at):
        return held
    found: dict[Key, str] = {}
    for r in remotes.remotes:
        for platform, cached in r.cache.secrets.items():
            for ctype in cached.types:  # the agent's names for its keys (agent.remotes.upstream)
                if (platform, ctype) not in found:
                    found[(platform, ctype)] = r.name
    keys = sorted(found)
    held = (keys, [found[k] for k in keys])
    remotes.listing_names, remotes.listing_of = held, at
    remotes.listing_sorts += 1
    return held


def page(
    remotes: team.Remotes, local: Agent, offset: int, limit: int | None, after: Key | None
) -> list[dict[str, Any]]:
    """One page of the listing of local and team keys together, in name order: the
    entries after the name ``after`` (a cursor), else from ``offset`` (as clients that
    predate the cursor ask: their offsets count the merged listing, a walk from its start)."""
    team_keys, sources = names(remotes, fresh=after is None and offset == 0)
    ordered = local.entries.ordered()
    start: Iterator[tuple[Key, str | None]]
    if after is None:
        start = itertools.islice(_merged(remotes, local, ordered, team_keys, sources, 0, 0), offset, None)
    else:
        i, j = bisect.bisect_right(ordered, after), bisect.bisect_right(team_keys, after)
        start = _merged(remotes, local, ordered, team_keys, sources, i, j)
    chosen = start if limit is None else itertools.islice(start, limit)
    return [
        {**local.describe(key), "source": "local"} if source is None else _entry(remotes.by_name[source], *key)
        for key, source in chosen
    ]


def _merged(
    remotes: team.Remotes, local: Agent, ordered: list[Key], team_keys: list[Key], sources: list[str], i: int, j: int
) -> Iterator[tuple[Key, str | None]]:
    """(name, remote or None for local) from local names ``ordered[i:]`` and team names
    ``team_keys[j:]`` merged in order, each team name once and only if it still resolves there."""
    entries = local.entries
    while True:
        lk = ordered[i] if i < len(ordered) else None
        tk = team_keys[j] if j < len(team_keys) else None
        if lk is None and tk is None:
            return
        if tk is None or (lk is not None and lk <= tk):
            i += 1
            j += tk == lk  # the local key shadows the team's
            assert lk is not None
            yield lk, None
            continue
        j += 1
        if tk in entries:
            continue  # stored locally since the team names were sorted: shown as local
        r = remotes.by_name[sources[j - 1]]
        cached = r.cache.secrets.get(tk[0])
        if cached is not None and tk[1] in cached.types:
            yield tk, r.name


def describe(remotes: team.Remotes, key: Key) -> dict[str, Any]:
    """The listing entry of a team key that is no local key: from the first remote that holds it."""
    if key not in remotes.agent.entries:
        for r in remotes.remotes:
            cached = r.cache.secrets.get(key[0])
            if cached is not None and key[1] in cached.types:
                return _entry(r, *key)
    raise remotes.not_found(key)


def _entry(r: team.Remote, platform: str, ctype: str) -> dict[str, Any]:
    secret = r.cache.secrets[platform].secret
    metadata: dict[str, Any] = {k: v for k, v in secret.custom.items() if k != team.EXPIRES_KEY}
    try:
        check_metadata(metadata)
    except errors.BadRequest:
        metadata = {}  # more than one listing page may carry (Vault allows 64 x 512 bytes)
    return {
        "platform": platform,
        "credential_type": ctype,
        "created": secret.created,
        "updated": secret.updated,
        "expires_at": team.expires(secret.custom),
        "metadata": metadata,
        "source": r.name,
        "version": secret.version,
    }


def _auth(meta: VaultMeta, r: team.Remote) -> str:
    """How the token was had: "cert", "approle", "jwt" (the agent logs in again so) or "token"."""
    name = r.name
    if r.options.auth == "cert":
        return "cert"
    if meta.get(sealed.approle_meta(name)) is not None:
        return "approle"
    return "jwt" if meta.get(sealed.jwt_meta(name)) is not None else "token"


def status(remotes: team.Remotes) -> list[dict[str, Any]]:
    """Per remote: reachable or not, the node that answered last, cache age, token TTL."""
    now = time.monotonic()
    out = []
    for r in remotes.remotes:
        nodes = r.nodes_if_made
        age = r.cache.age(now)
        meta = remotes.agent.meta
        stored = meta.get(sealed.token_meta(r.name)) is not None
        out.append(
            {
                "remote": r.name,
                "urls": list(r.options.urls),
                "logged_in": r.token is not None,
                "token_stored": stored,
                "reachable": r.reachable,  # None: not asked since the agent started
                "last_node": nodes.last_node if nodes else None,
                "last_error": r.last_error,
                "last_answer_age_s": None if r.last_ok is None else round(now - r.last_ok, 3),
                "cache_age_s": None if age is None else round(age, 3),
                "cached_secrets": len(r.cache.secrets),
                "stale": age is not None and age > r.options.refresh,
                "past_max_stale": age is not None and age > r.options.max_stale,  # cached values refused
                "token_ttl_s": None if r.token_expires is None else round(max(0.0, r.token_expires - now), 3),
                "token_never_expires": r.token is not None and r.token_ttl is not None and r.token_expires is None,
                "renewable": r.renewable,
                "renewals": r.renewals,
                "kind": r.options.kind,
                "auth": _auth(meta, r)
                if stored or r.options.auth == "cert"
                else "credential-chain"
                if r.token
                else None,
                # AppRole, JWT or certificate logins made by the agent itself (its token had ended)
                "relogins": r.relogins,
                "namespace": r.options.namespace or None,
                "calls": nodes.calls if nodes else 0,
                # background tries (lookup, renewal, refresh) failed in a row, and when the next one is
                "failures": r.failures,
                # seconds since a node refused the token itself (revoked, expired), else None
                "token_denied_s": None if r.denied_at is None else round(now - r.denied_at, 3),
                "next_try_s": round(max(0.0, r.retry_at - now), 3) if r.failures else None,
                "refresh": r.options.refresh,
                "max_stale": r.options.max_stale,
                "denied_grace": r.options.denied_grace,  # cached values served this long after token_denied_s
                **refresh.status(r),
                **offline.status(r),
            }
        )
    return out
