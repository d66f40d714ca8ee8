"""A team vault's token over its life: login (a token, an AppRole, a JWT, or the remote's
client certificate), sign-in, the lookup after an unlock, renewal, and a new AppRole, JWT
or certificate login when the token cannot be renewed.

Rules of this module:
- the token is sealed in the local vault's meta (``agent.remotes.sealed``) under the
  key current inside ``LockState.writing()``, so a rotation waits for it; it is opened
  at unlock (``open_sealed``) and dropped at lock (``Remote.forget``);
- after an AppRole login its role and secret ids are sealed beside it, after a JWT login
  its role and the JWT (or the file the JWT is read from again each time): a token that
  can no longer be renewed (its max TTL reached, or refused) is replaced by a new
  login, with no one at the keyboard; a token given by hand replaces either;
- a token that a node refuses is used no further by a member with no AppRole: the
  refusal is raised for the caller (the background loop) to log and retry later;
- a remote with ``auth = "cert"`` logs in by itself with its client certificate whenever
  it holds no token (after an unlock, or a refusal): nothing but the token is sealed, the
  config names the certificate; one login at a time, shared by the gets that wait on it,
  and none while a failed one backs off (``Remote.failed``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any, Final

from agent.crypto import SecureStorage
from agent.remotes import AppRole, Cert, Jwt, Login, TokenInfo, kinds, mounts
from agent.remotes.remote import Remote
from agent.remotes.sealed import (
    approle_meta,
    jwt_meta,
    seal_approle,
    seal_jwt,
    seal_token,
    token_meta,
    unseal_approle,
    unseal_jwt,
    unseal_token,
)
from client import errors

__all__ = [
    "open_sealed",
    "from_chain",
    "by_cert",
    "logs_in_itself",
    "first_login",
    "lookup",
    "renew",
    "sign_in",
    "login",
]

log = logging.getLogger("agent.remotes")
MAX_JWT: Final = 64 * 1024  # characters of a JWT file read; CI and Kubernetes tokens are a few KiB
_LOGIN: Final = "\0login"  # Remote.inflight's key of a certificate login under way (no secret's name)


def open_sealed(r: Remote, storage: SecureStorage) -> bool:
    """At unlock: the token (and AppRole or JWT login) sealed in the vault, held again; True if there is one."""
    meta = r.state.meta
    sealed = meta.get(token_meta(r.name))
    if sealed is None:
        return False
    try:
        r.token = unseal_token(storage, r.name, sealed)
        approle, jwt = meta.get(approle_meta(r.name)), meta.get(jwt_meta(r.name))
        r.login_as = (
            Cert(r.options.cert_role)
            if r.options.auth == "cert"
            else unseal_approle(storage, r.name, approle)
            if approle is not None
            else unseal_jwt(storage, r.name, jwt)
            if jwt is not None
            else None
        )
    except errors.IntegrityError:
        log.error("the token of remote %s failed its integrity check; run `agent remote login %s`", r.name, r.name)
        r.token = r.login_as = None
        return False
    r.needs_lookup, r.next_sync = True, 0.0
    return True


def from_chain(r: Remote) -> bool:
    """At unlock, for a kind with no login (AWS: boto3's credential chain): held as signed in
    (``kinds.CHAIN``), its credentials looked up as a token would be; True if so."""
    if kinds.KINDS[r.options.kind].login:
        return False
    r.token, r.login_as = kinds.CHAIN, None
    r.needs_lookup, r.next_sync = True, 0.0
    return True


def by_cert(r: Remote) -> bool:
    """At unlock, for ``auth = "cert"`` with no token sealed: log in with the certificate
    soon (the background loop, or the first get); False: there is no token yet."""
    if r.options.auth == "cert":
        r.token, r.login_as, r.next_sync = None, Cert(r.options.cert_role), 0.0
    return False


def logs_in_itself(r: Remote) -> bool:
    """Whether ``r`` holds no token but can get one by itself now (its client certificate)."""
    return r.token is None and isinstance(r.login_as, Cert) and not r.state.locked


async def first_login(r: Remote) -> None:
    """A token for a remote that logs in by itself and holds none: one login under way at
    a time, shared; while a failed one backs off, its failure again without a request."""
    if not logs_in_itself(r):
        return
    if time.monotonic() < r.retry_at and r.login_failure is not None:
        raise r.login_failure
    pending = r.inflight.get(_LOGIN)
    if pending is None:
        pending = r.inflight[_LOGIN] = asyncio.ensure_future(_cert_login(r))
        held = r.inflight  # a lock replaces it: the login of before leaves the new one alone
        pending.add_done_callback(lambda _: held.pop(_LOGIN, None))
    await asyncio.shield(pending)


async def _cert_login(r: Remote) -> None:
    """The login of ``first_login``, counted once however many wait on it."""
    epoch = r.epoch
    try:
        await sign_in(r, None, Cert(r.options.cert_role), check_mount=True)
    except errors.AgentError as e:
        if r.epoch != epoch:  # a lock meanwhile: not a failure of the certificate
            raise
        r.login_failure = e
        wait = r.failed(time.monotonic())
        if r.failures & (r.failures - 1) == 0:
            log.warning("remote %s: %s (try %d; the next in %.0f s)", r.name, e.message, r.failures, wait)
        raise
    r.login_failure = None
    r.succeeded()
    r.next_sync = r.next_list = 0.0
    log.info("remote %s: logged in with its client certificate", r.name)


async def lookup(r: Remote) -> None:
    """After an unlock, or a refusal: what the token may still do (its TTL), or a new
    AppRole login; a token the node refuses itself is marked denied (``Remote.refused``)."""
    token, epoch = r.token_for(), r.epoch
    try:
        info = await r.call(epoch, lambda d: r.nodes.lookup_self(token, d))
    except errors.RemoteDenied:
        if r.login_as is None:
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
    if info.ttl <= 0 < info.creation_ttl and r.login_as is not None:  # at its very end
        await _relogin(r, "its token expires now")
        return
    r.needs_lookup, r.creation_ttl = False, info.creation_ttl
    r.set_ttl(info.ttl, info.renewable, time.monotonic())


async def renew(r: Remote) -> None:
    if not r.renewable:  # an AppRole's or a JWT's token that is not renewable: log in again instead
        await _relogin(r, "its token is not renewable")
        return
    token, epoch = r.token_for(), r.epoch
    try:
        ttl = await r.call(epoch, lambda d: r.nodes.renew_self(token, d))
    except (errors.RemoteDenied, errors.RemoteUnavailable):  # past its max TTL: a 500, then a 403
        if r.login_as is None:
            raise
        await _relogin(r, "its token could not be renewed")
        return
    r.renewals += 1
    r.set_ttl(ttl, r.renewable, time.monotonic())
    log.info("remote %s: token renewed (TTL %.0f s)", r.name, ttl)
    if 0 < r.creation_ttl and ttl < r.creation_ttl:  # cut short by its max TTL: no renewal goes past it
        if r.login_as is not None:
            await _relogin(r, "its token reached its max TTL")
        else:
            log.warning(
                "remote %s: the token reaches its max TTL in %.0f s; then run `agent remote login %s`",
                r.name,
                ttl,
                r.name,
            )


def _how(login: Login | None) -> str:
    if isinstance(login, Cert):
        return "with its client certificate"
    return "with its AppRole" if isinstance(login, AppRole) else "with its JWT" if login else "with a token"


async def _relogin(r: Remote, why: str) -> None:
    """A new token from the AppRole or JWT login kept sealed, in place of one that cannot be renewed."""
    assert r.login_as is not None
    await sign_in(r, None, r.login_as)
    r.relogins += 1
    log.info("remote %s: logged in again %s (%s)", r.name, _how(r.login_as), why)


def _read_jwt(path: str) -> str:
    """The JWT in ``path`` now (its issuer may have renewed it in place); never quoted in an error."""
    try:
        with open(path, encoding="ascii") as f:
            text = f.read(MAX_JWT + 1)
    except (OSError, UnicodeDecodeError) as e:
        why = e.strerror if isinstance(e, OSError) and e.strerror else "not ASCII text"
        raise errors.BadRequest(f"the JWT file {path} cannot be read ({why})") from None
    if len(text) > MAX_JWT:
        raise errors.BadRequest(f"the JWT file {path} holds more than {MAX_JWT} characters; no JWT is that long")
    jwt = _checked(text, f"JWT (in {path})")
    assert jwt is not None
    return jwt


async def _new_token(r: Remote, login: Login, epoch: int) -> str:
    if isinstance(login, AppRole):
        return await r.call(epoch, lambda d: r.nodes.approle_login(login.role_id, login.secret_id, d))
    if isinstance(login, Cert):
        return await r.call(epoch, lambda d: r.nodes.cert_login(d))
    jwt = login.jwt if login.path is None else await asyncio.to_thread(_read_jwt, login.path)
    assert jwt is not None
    return await r.call(epoch, lambda d: r.nodes.jwt_login(login.role, jwt, d))


async def sign_in(r: Remote, token: str | None, login: Login | None, check_mount: bool = False) -> TokenInfo:
    """Check the token (or get one with ``login``) and, at a login, the mount; seal the
    token (and ``login``) in the vault, hold it."""
    epoch, state = r.epoch, r.state
    if login is not None:
        token = await _new_token(r, login, epoch)
    assert token is not None
    given = token
    info = await r.call(epoch, lambda d: r.nodes.lookup_self(given, d))
    if check_mount:  # a mount that is not KV v2 is refused before the token is kept
        await mounts.check(r, given, epoch)
    async with state.writing() as storage:  # sealed under the key current then: a rotation waits
        sealed = {token_meta(r.name): seal_token(storage, r.name, given)}
        if isinstance(login, AppRole):
            sealed[approle_meta(r.name)] = seal_approle(storage, r.name, login)
        elif isinstance(login, Jwt):
            sealed[jwt_meta(r.name)] = seal_jwt(storage, r.name, login)
        await state.meta.save(sealed)
        for kind, name in ((AppRole, approle_meta(r.name)), (Jwt, jwt_meta(r.name))):
            if not isinstance(login, kind) and state.meta.get(name) is not None:
                await state.meta.drop(name)  # the way of this login replaces the one before
    if state.locked or r.epoch != epoch:
        raise errors.Locked("the agent was locked during the login; the token is kept for the next unlock")
    r.token, r.login_as, r.needs_lookup, r.creation_ttl = given, login, False, info.creation_ttl
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


def _chosen(
    token: str | None,
    role_id: str | None,
    secret_id: str | None,
    jwt: str | None,
    jwt_role: str | None,
    jwt_file: str | None,
) -> tuple[str | None, Login | None]:
    """The token, or how to get one: exactly one way, each part checked."""
    approle = role_id is not None or secret_id is not None
    jwt_way = jwt_role is not None or jwt is not None or jwt_file is not None
    if (
        (token is not None) + approle + jwt_way != 1
        or (approle and (role_id is None or secret_id is None))
        or (jwt_way and (jwt_role is None or (jwt is None) == (jwt_file is None)))
    ):
        raise errors.BadRequest(
            "give a token, an AppRole's role_id and secret_id, or a JWT role with a JWT or a JWT file "
            '(or set auth = "cert" in the remote\'s table to log in with its client certificate)'
        )
    if role_id is not None and secret_id is not None:
        return None, AppRole(_checked(role_id, "role id") or "", _checked(secret_id, "secret id") or "")
    if jwt_role is not None:
        role = _checked(jwt_role, "JWT role") or ""
        if jwt_file is not None and not Path(jwt_file).is_absolute():
            raise errors.BadRequest("the JWT file must be an absolute path (the agent reads it again at each login)")
        return None, Jwt(role, _checked(jwt, "JWT"), jwt_file)
    return _checked(token, "token"), None


async def login(
    r: Remote,
    token: str | None,
    role_id: str | None,
    secret_id: str | None,
    jwt: str | None = None,
    jwt_role: str | None = None,
    jwt_file: str | None = None,
) -> dict[str, Any]:
    """``agent remote login``: a token, an AppRole's role and secret ids, or a JWT (or the
    file it is in) for a role of the jwt auth method: exactly one of them."""
    if not kinds.KINDS[r.options.kind].login:
        raise errors.BadRequest(
            f"remote {r.name!r} is {r.options.kind}: it takes no login, its credentials come from "
            "boto3's standard chain (environment, ~/.aws config and profiles, SSO, an instance or container role)"
        )
    how: Login | None
    if r.options.auth == "cert":  # the certificate the config names is the only way in
        if any(x is not None for x in (token, role_id, secret_id, jwt, jwt_role, jwt_file)):
            raise errors.BadRequest(
                f'remote {r.name!r} logs in with its client certificate (auth = "cert" in [remote.{r.name}]): '
                f"`agent remote login {r.name} --cert`, no token"
            )
        how = Cert(r.options.cert_role)
    else:
        token, how = _chosen(token, role_id, secret_id, jwt, jwt_role, jwt_file)
    info = await sign_in(r, token, how, check_mount=True)
    r.next_sync = r.next_list = 0.0  # a refresh now, with what this token may read
    log.info("remote %s: logged in %s (policies %s)", r.name, _how(how), ", ".join(info.policies))
    return {
        "remote": r.name,
        "ttl_s": info.ttl,
        "renewable": info.renewable,
        "policies": list(info.policies),
        "auth": "cert"
        if isinstance(how, Cert)
        else "approle"
        if isinstance(how, AppRole)
        else "jwt"
        if how
        else "token",
    }
