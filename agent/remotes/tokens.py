"""A team vault's token over its life: login (a token, or an AppRole), sign-in, the lookup
after an unlock, renewal, and a new AppRole login when the token cannot be renewed.

Rules of this module:
- the token is sealed in the local vault's meta (``agent.remotes.sealed``) under the
  key current inside ``LockState.writing()``, so a rotation waits for it; it is opened
  at unlock (``open_sealed``) and dropped at lock (``Remote.forget``);
- after an AppRole login its role and secret ids are sealed beside it: a token that
  can no longer be renewed (its max TTL reached, or refused) is replaced by a new
  login, with no one at the keyboard; a token given by hand replaces the AppRole;
- a token that a node refuses is used no further by a member with no AppRole: the
  refusal is raised for the caller (the background loop) to log and retry later.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from agent.crypto import SecureStorage
from agent.remotes import AppRole, TokenInfo, mounts
from agent.remotes.remote import Remote
from agent.remotes.sealed import approle_meta, seal_approle, seal_token, token_meta, unseal_approle, unseal_token
from client import errors

__all__ = ["open_sealed", "lookup", "renew", "sign_in", "login"]

log = logging.getLogger("agent.remotes")


def open_sealed(r: Remote, storage: SecureStorage) -> bool:
    """At unlock: the token (and AppRole) sealed in the vault, held again; True if there is one."""
    meta = r.state.meta
    sealed = meta.get(token_meta(r.name))
    if sealed is None:
        return False
    try:
        r.token = unseal_token(storage, r.name, sealed)
        approle = meta.get(approle_meta(r.name))
        r.approle = None if approle is None else unseal_approle(storage, r.name, approle)
    except errors.IntegrityError:
        log.error("the token of remote %s failed its integrity check; run `agent remote login %s`", r.name, r.name)
        r.token = r.approle = None
        return False
    r.needs_lookup, r.next_sync = True, 0.0
    return True


async def lookup(r: Remote) -> None:
    """After an unlock, or a refusal: what the token may still do (its TTL), or a new
    AppRole login; a token the node refuses itself is marked denied (``Remote.refused``)."""
    token, epoch = r.token_for(), r.epoch
    try:
        info = await r.call(epoch, lambda d: r.nodes.lookup_self(token, d))
    except errors.RemoteDenied:
        if r.approle is None:
            if r.denied_at is None and r.epoch == epoch:
                r.denied_at = time.monotonic()
                log.warning(
                    "remote %s: the token was refused (revoked or expired); cached values stop after %g s",
                    r.name,
                    r.options.denied_grace,
                )
            raise
        await _relogin(r, "its token is no longer valid")
        return
    r.denied_at = None
    if info.ttl <= 0 < info.creation_ttl and r.approle is not None:  # at its very end
        await _relogin(r, "its token expires now")
        return
    r.needs_lookup, r.creation_ttl = False, info.creation_ttl
    r.set_ttl(info.ttl, info.renewable, time.monotonic())


async def renew(r: Remote) -> None:
    if not r.renewable:  # an AppRole's token that is not renewable: log in again instead
        await _relogin(r, "its token is not renewable")
        return
    token, epoch = r.token_for(), r.epoch
    try:
        ttl = await r.call(epoch, lambda d: r.nodes.renew_self(token, d))
    except (errors.RemoteDenied, errors.RemoteUnavailable):  # past its max TTL: a 500, then a 403
        if r.approle is None:
            raise
        await _relogin(r, "its token could not be renewed")
        return
    r.renewals += 1
    r.set_ttl(ttl, r.renewable, time.monotonic())
    log.info("remote %s: token renewed (TTL %.0f s)", r.name, ttl)
    if 0 < r.creation_ttl and ttl < r.creation_ttl:  # cut short by its max TTL: no renewal goes past it
        if r.approle is not None:
            await _relogin(r, "its token reached its max TTL")
        else:
            log.warning(
                "remote %s: the token reaches its max TTL in %.0f s; then run `agent remote login %s`",
                r.name,
                ttl,
                r.name,
            )


async def _relogin(r: Remote, why: str) -> None:
    """A new token from the AppRole kept sealed, in place of one that cannot be renewed."""
    assert r.approle is not None
    await sign_in(r, None, r.approle)
    r.relogins += 1
    log.info("remote %s: logged in again with its AppRole (%s)", r.name, why)


async def sign_in(r: Remote, token: str | None, approle: AppRole | None, check_mount: bool = False) -> TokenInfo:
    """Check the token (or get one for ``approle``) and, at a login, the mount; seal the
    token in the vault, hold it."""
    epoch, state = r.epoch, r.state
    if approle is not None:
        token = await r.call(epoch, lambda d: r.nodes.approle_login(approle.role_id, approle.secret_id, d))
    assert token is not None
    given = token
    info = await r.call(epoch, lambda d: r.nodes.lookup_self(given, d))
    if check_mount:  # a mount that is not KV v2 is refused before the token is kept
        await mounts.check(r, given, epoch)
    async with state.writing() as storage:  # sealed under the key current then: a rotation waits
        sealed = {token_meta(r.name): seal_token(storage, r.name, given)}
        if approle is not None:
            sealed[approle_meta(r.name)] = seal_approle(storage, r.name, approle)
        await state.meta.save(sealed)
        if approle is None and state.meta.get(approle_meta(r.name)) is not None:
            await state.meta.drop(approle_meta(r.name))  # a token given by hand replaces the AppRole
    if state.locked or r.epoch != epoch:
        raise errors.Locked("the agent was locked during the login; the token is kept for the next unlock")
    r.token, r.approle, r.needs_lookup, r.creation_ttl = given, approle, False, info.creation_ttl
    r.denied_at = None
    r.set_ttl(info.ttl, info.renewable, time.monotonic())
    return info


def _checked(value: str | None, what: str) -> str | None:
    """A token or id as given, less surrounding whitespace; refused if anything is left that
    no OpenBao token or id holds (it would go into an HTTP header, and its error into a log)."""
    if value is None:
        return None
    value = value.strip()
    if not value or not all(0x21 <= ord(ch) <= 0x7E for ch in value):
        raise errors.BadRequest(f"that {what} is empty or has spaces or control characters inside; no {what} has")
    return value


async def login(r: Remote, token: str | None, role_id: str | None, secret_id: str | None) -> dict[str, Any]:
    """``agent remote login``: a token, or an AppRole's role and secret ids (exactly one of them)."""
    if (token is None) == (role_id is None) or (role_id is not None) != (secret_id is not None):
        raise errors.BadRequest("give a token, or an AppRole's role_id and secret_id")
    token, role_id = _checked(token, "token"), _checked(role_id, "role id")
    secret_id = _checked(secret_id, "secret id")
    approle = AppRole(role_id, secret_id) if role_id is not None and secret_id is not None else None
    info = await sign_in(r, token, approle, check_mount=True)
    r.next_sync = 0.0  # a refresh now, with what this token may read
    how = "with its AppRole" if approle else "with a token"
    log.info("remote %s: logged in %s (policies %s)", r.name, how, ", ".join(info.policies))
    return {
        "remote": r.name,
        "ttl_s": info.ttl,
        "renewable": info.renewable,
        "policies": list(info.policies),
        "auth": "approle" if approle else "token",
    }
