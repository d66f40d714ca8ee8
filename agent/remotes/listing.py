"""What the agent shows of its team vaults: listing entries (never values) and status.

A team key is listed once, with ``"source": NAME``, when it is what ``get`` would
return: not shadowed by a local key of the same name, nor by an earlier remote.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from agent.remotes import offline, refresh, sealed, team
from agent.state import Key
from agent.stores import VaultMeta
from client import errors
from client.validation import check_metadata

__all__ = ["entries", "describe", "status"]


def entries(remotes: team.Remotes, local: Mapping[Key, Any]) -> list[dict[str, Any]]:
    """The team keys that resolve to a remote, in the remotes' order."""
    seen: set[Key] = set(local)
    out = []
    for r in remotes.remotes:
        for platform, cached in r.cache.secrets.items():
            for ctype in cached.types:  # the agent's names for its keys (agent.remotes.upstream)
                if (platform, ctype) not in seen:
                    seen.add((platform, ctype))
                    out.append(_entry(r, platform, ctype))
    return out


def describe(remotes: team.Remotes, key: Key) -> dict[str, Any]:
    for entry in entries(remotes, remotes.agent.entries):
        if (entry["platform"], entry["credential_type"]) == key:
            return entry
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


def _auth(meta: VaultMeta, name: str) -> str:
    """How the stored token was had: "approle", "jwt" (the agent logs in again so) or "token"."""
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
                "auth": _auth(meta, r.name) if stored else "credential-chain" if r.token else None,
                "relogins": r.relogins,  # AppRole or JWT logins made by the agent itself (its token had ended)
                "calls": nodes.calls if nodes else 0,
                # background tries (lookup, renewal, refresh) failed in a row, and when the next one is
                "failures": r.failures,
                # seconds since a node refused the token itself (revoked, expired), else None
                "token_denied_s": None if r.denied_at is None else round(now - r.denied_at, 3),
                "next_try_s": round(max(0.0, r.retry_at - now), 3) if r.failures else None,
                "refresh": r.options.refresh,
                "max_stale": r.options.max_stale,
                **refresh.status(r),
                **offline.status(r),
            }
        )
    return out
