"""The calls to one OpenBao / Vault node set: KV v2 reads, writes and listings, token
lookup and renewal, AppRole login, trying the next node when one fails.

Rules of this module:
- it is the only module that imports hvac; its exceptions and requests' are
  translated here: a connection error, a timeout, a 5xx, a sealed or standby answer,
  a listener that is not this user's, a redirect off the remote's nodes -> the next
  node; 403 -> ``RemoteDenied`` naming the remote and path; a lost check-and-set ->
  ``Conflict``; none of them carries a token or a value;
- every request goes through ``agent.remotes.http``'s session: who may receive it,
  and where it may be redirected, is checked there;
- every function here blocks: ``agent.remotes.team`` runs each in a worker thread
  under a deadline. Each HTTP request has its own timeout, and a call gives up on
  the nodes left once its deadline has passed;
- the token is an argument of each call, set on the thread's client for that call
  only: after it, no client holds it (a lock leaves no copy behind here).
"""

from __future__ import annotations

import datetime
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import hvac
import hvac.exceptions
import requests

from agent.remotes import Mount, RemoteOptions, Secret, SecretMeta, TokenInfo, Version, http
from client import errors

__all__ = ["Nodes"]

log = logging.getLogger("agent.remotes")
logging.getLogger("urllib3").setLevel(logging.WARNING)  # its debug lines name every request

T = TypeVar("T")
# answers after which another node may do better: down, sealed, standby without forwarding, overloaded
_NEXT_NODE = (
    requests.ConnectionError,
    requests.Timeout,
    hvac.exceptions.VaultDown,
    hvac.exceptions.InternalServerError,
    hvac.exceptions.BadGateway,
    hvac.exceptions.RateLimitExceeded,
    hvac.exceptions.PreconditionFailed,
    hvac.exceptions.VaultNotInitialized,
    hvac.exceptions.UnexpectedError,
    http.UntrustedListener,
)


def _time(text: Any) -> float:
    """An RFC 3339 time from Vault (nanoseconds, ``Z``) as a Unix time; 0 if absent."""
    if not isinstance(text, str) or not text or text.startswith("0001-"):
        return 0.0
    head, _, frac = text.rstrip("Z").partition(".")
    frac = (frac.split("+")[0].split("-")[0] + "000000")[:6]
    try:
        when = datetime.datetime.fromisoformat(f"{head}.{frac}+00:00")
    except ValueError:
        return 0.0
    return when.timestamp()


def _strings(data: Any) -> dict[str, str]:
    return {k: v for k, v in (data or {}).items() if isinstance(k, str) and isinstance(v, str)}


class Nodes:
    """The nodes of one remote, tried in turn from the one that answered last
    (``agent.remotes.kinds.Backend``)."""

    has_mount = True

    def __init__(self, options: RemoteOptions) -> None:
        self.options = options
        self.last_node: str | None = None
        self.last_error: str | None = None
        self.calls = 0  # HTTP requests sent (status reports it: a locked agent sends none)
        self._first = 0
        self._stale = True  # find the active node before the next call (again after a failure, and each refresh)
        self.epoch = 0  # bumped at each lock: a call under way stops before its next request
        self._local = threading.local()  # one hvac client (and HTTP session) per thread and node

    def __repr__(self) -> str:
        return f"Nodes({self.options.name!r}, {len(self.options.urls)} nodes)"

    def _client(self, url: str) -> Any:
        clients: dict[str, Any] = self._local.__dict__.setdefault("clients", {})
        client = clients.get(url)
        if client is None:
            o = self.options
            tls = http.Tls(o.ca_file, o.tls_server_name, o.client_cert, o.client_key)
            session = http.session(o.urls, o.listener_uids, tls, o.namespace)
            # verify and cert are the session's (hvac takes those over its own); cert=() keeps
            # hvac from presenting a certificate named by VAULT_CLIENT_CERT in the environment
            client = clients[url] = hvac.Client(
                url=http.base_url(url),
                verify=session.verify,
                cert=session.cert or (),
                timeout=o.timeout,
                session=session,
                namespace=o.namespace or None,
            )
        return client

    def _send(self, url: str, token: str | None, fn: Callable[[Any], T]) -> T:
        """``fn`` with the thread's client of ``url`` holding ``token`` for this call only."""
        client = self._client(url)
        client.token = token
        try:
            return fn(client)
        except requests.RequestException as e:
            if isinstance(e, _NEXT_NODE):
                raise
            # a request that could not be made (a header no token may hold, a bad URL): its
            # text may quote the request, so only its kind goes on
            raise errors.RemoteUnavailable(f"remote {self.options.name!r}: {_why(e)}") from None
        finally:
            client.token = None

    def _find_active(self, deadline: float, seen: list[str], epoch: int) -> bool:
        """Point ``_first`` at the active node: a standby that lost its leader may answer
        from stale data (a listing it does not have, 404) instead of forwarding."""
        urls = self.options.urls
        for i in range(len(urls)):
            index = (self._first + i) % len(urls)
            if time.monotonic() >= deadline:
                break
            if self.epoch != epoch:
                raise errors.Locked()
            self.calls += 1
            try:
                status = self._send(urls[index], None, lambda c: c.sys.read_leader_status())
            except (*_NEXT_NODE, hvac.exceptions.VaultError) as e:
                seen.append(f"{urls[index]}: {_why(e)}")
                continue
            leader = str(status.get("leader_address") or "").rstrip("/")
            if not status.get("ha_enabled") or status.get("is_self"):
                self._first, self._stale = index, False  # a single node, or the active one
                return True
            if leader in urls:
                self._first, self._stale = urls.index(leader), False
                return True
            if leader:  # behind a load balancer: this node forwards to the active one
                self._first, self._stale = index, False
                return True
            seen.append(f"{urls[index]}: no active node known (an election?)")
        return False

    def run(self, what: str, token: str | None, fn: Callable[[Any], T], deadline: float) -> T:
        """``fn(client)`` against the active node, found anew after any node fails, before ``deadline``."""
        name, urls = self.options.name, self.options.urls
        seen: list[str] = []
        epoch = self.epoch
        for _ in range(len(urls)):
            if self.epoch != epoch:
                raise errors.Locked()
            if time.monotonic() >= deadline:
                seen.append("deadline passed")
                break
            if self._stale and not self._find_active(deadline, seen, epoch):
                break
            index = self._first
            url = urls[index]
            if self.epoch != epoch:
                raise errors.Locked()
            self.calls += 1
            try:
                result = self._send(url, token, fn)
            except _NEXT_NODE as e:
                seen.append(f"{url}: {_why(e)}")
                self._stale, self._first = True, (index + 1) % len(urls)
                continue
            except http.NoNamespace:
                self._answered(url, index)
                raise errors.ConfigError(
                    f"remote {name!r}: [remote.{name}] namespace = {self.options.namespace!r} does not exist at "
                    f"{url} (asked for {what}); nothing was read or written"
                ) from None
            except hvac.exceptions.Forbidden:
                self._answered(url, index)
                raise errors.RemoteDenied(
                    f"remote {name!r} denied {what} (its policy does not allow it, or the token is no longer "
                    f"valid: `agent remote login {name}`)"
                ) from None
            except hvac.exceptions.InvalidRequest as e:
                if "Waiting for the primary" in str(e):  # a standby while a new mount settles
                    seen.append(f"{url}: standby not ready")
                    self._stale, self._first = True, (index + 1) % len(urls)
                    continue
                self._answered(url, index)
                if "check-and-set" in str(e):
                    raise errors.Conflict(
                        f"{what} changed upstream since this agent read it; nothing was written "
                        f"(`agent remote sync {name}`, then retry)"
                    ) from None
                raise errors.BadRequest(f"remote {name!r} refused {what} (a bad request)") from None
            except hvac.exceptions.VaultError as e:
                self._answered(url, index)
                raise errors.RemoteUnavailable(f"remote {name!r} answered {what} with {_why(e)}") from None
            self._answered(url, index)
            return result
        self.last_error = "; ".join(seen)
        raise errors.RemoteUnavailable(f"remote {name!r}: no node answered {what} ({self.last_error})")

    def _answered(self, url: str, index: int) -> None:
        self.last_node, self._first, self.last_error = url, index, None

    # --- KV v2 -----------------------------------------------------------------------------
    def _where(self, name: str) -> str:
        return f"{self.options.mount}/data/{self.options.path(name)}"

    def names(self, token: str, deadline: float) -> list[str] | None:
        """The names directly under the prefix, folders with their trailing ``/``; None where
        the path holds nothing (404: an empty prefix, or a mount that is not KV v2). A refresh
        starts here, so the active node is asked for again here: once a refresh, not before
        every request (a failed node makes the next call ask at once)."""
        self._stale = True

        def fn(c: Any) -> list[str] | None:
            try:
                reply = c.secrets.kv.v2.list_secrets(self.options.prefix, mount_point=self.options.mount)
            except hvac.exceptions.InvalidPath:
                return None
            return [k for k in reply["data"].get("keys", []) if isinstance(k, str)]

        return self.run(f"the list of {self.options.mount}/metadata/{self.options.prefix}", token, fn, deadline)

    def mount(self, token: str, deadline: float) -> Mount | None:
        """The engine mounted at the configured mount; None where the node says 403: no such
        mount, or none under which this token may do anything (a policy-limited token may
        not read ``sys/mounts``, and the endpoint answers both cases alike)."""

        def fn(c: Any) -> Mount | None:
            try:
                reply = c.adapter.get(f"/v1/sys/internal/ui/mounts/{self.options.mount}")
            except hvac.exceptions.Forbidden:
                return None
            except hvac.exceptions.InvalidPath:
                return Mount("", "", "")  # a node without the endpoint: nothing known
            data = reply.get("data") if isinstance(reply, dict) else None
            if not isinstance(data, dict):
                return Mount("", "", "")
            options = data.get("options")
            options = options if isinstance(options, dict) else {}
            return Mount(str(data.get("path") or ""), str(data.get("type") or ""), str(options.get("version") or ""))

        return self.run(f"the mount {self.options.mount!r}", token, fn, deadline)

    # a secret's ``name`` below is its name upstream (under the prefix), which may differ from
    # the agent's name for it (``agent.remotes.upstream``)
    def meta(self, token: str, name: str, deadline: float) -> SecretMeta | None:
        def fn(c: Any) -> SecretMeta | None:
            try:
                reply = c.secrets.kv.v2.read_secret_metadata(self.options.path(name), mount_point=self.options.mount)
            except hvac.exceptions.InvalidPath:
                return None
            data = reply["data"]
            version = int(data.get("current_version") or 0)
            current = (data.get("versions") or {}).get(str(version)) or {}
            deleted = bool(current.get("destroyed")) or bool(current.get("deletion_time"))
            return SecretMeta(
                version,
                deleted,
                _strings(data.get("custom_metadata")),
                _time(data.get("created_time")),
                _time(data.get("updated_time")),
            )

        return self.run(f"the metadata of {self._where(name)}", token, fn, deadline)

    def read(self, token: str, name: str, deadline: float) -> Secret | None:
        """The current version, or None where there is none (never written, or deleted)."""

        def fn(c: Any) -> Secret | None:
            try:
                reply = c.secrets.kv.v2.read_secret_version(
                    self.options.path(name), mount_point=self.options.mount, raise_on_deleted_version=True
                )
            except hvac.exceptions.InvalidPath:
                return None
            data, meta = reply["data"].get("data") or {}, reply["data"].get("metadata") or {}
            custom = _strings(meta.get("custom_metadata"))
            created = _time(meta.get("created_time"))
            return Secret(int(meta.get("version") or 0), _strings(data), custom, created, created)

        return self.run(f"a read of {self._where(name)}", token, fn, deadline)

    def write(
        self,
        token: str,
        name: str,
        values: dict[str, str],
        custom: dict[str, str] | None,
        cas: Version,
        deadline: float,
    ) -> Version:
        """Write a new version if the current one is still ``cas`` (0: none yet); its number."""

        def fn(c: Any) -> int:
            reply = c.secrets.kv.v2.create_or_update_secret(
                self.options.path(name), secret=values, cas=cas, mount_point=self.options.mount
            )
            return int(reply["data"]["version"])

        version = self.run(f"{self._where(name)} (version {cas})", token, fn, deadline)
        if custom is not None:
            self.run(
                f"the metadata of {self._where(name)}",
                token,
                lambda c: c.secrets.kv.v2.update_metadata(
                    self.options.path(name), custom_metadata=custom, mount_point=self.options.mount
                ),
                deadline,
            )
        return version

    def delete_version(self, token: str, name: str, version: Version, deadline: float) -> None:
        """Delete (reversibly) exactly ``version``: a newer one written meanwhile stays current."""
        self.run(
            f"a delete of {self._where(name)}",
            token,
            lambda c: c.secrets.kv.v2.delete_secret_versions(
                self.options.path(name), versions=[version], mount_point=self.options.mount
            ),
            deadline,
        )

    # --- tokens ------------------------------------------------------------------------------
    def lookup_self(self, token: str, deadline: float) -> TokenInfo:
        def fn(c: Any) -> TokenInfo:
            data = c.auth.token.lookup_self()["data"]
            return TokenInfo(
                float(data.get("ttl") or 0),
                bool(data.get("renewable")),
                tuple(data.get("policies") or ()),
                float(data.get("creation_ttl") or 0),
            )

        return self.run("a token lookup", token, fn, deadline)

    def renew_self(self, token: str, deadline: float) -> float:
        """Renew the token; its new TTL in seconds."""

        def fn(c: Any) -> float:
            return float(c.auth.token.renew_self()["auth"]["lease_duration"] or 0)

        return self.run("a token renewal", token, fn, deadline)

    def approle_login(self, role_id: str, secret_id: str, deadline: float) -> str:
        """A token for the AppRole (role_id, secret_id)."""

        def fn(c: Any) -> str:
            token: str = c.auth.approle.login(role_id, secret_id, use_token=False)["auth"]["client_token"]
            return token

        return self.run("an AppRole login", None, fn, deadline)

    def jwt_login(self, role: str, jwt: str, deadline: float) -> str:
        """A token for ``jwt`` as ``role`` of the jwt auth method at ``auth/<jwt_path>``."""

        def fn(c: Any) -> str:
            reply = c.auth.jwt.jwt_login(role, jwt, use_token=False, path=self.options.jwt_path)
            token: str = reply["auth"]["client_token"]
            return token

        return self.run(f"a JWT login as role {role!r} at auth/{self.options.jwt_path}", None, fn, deadline)

    def cert_login(self, deadline: float) -> str:
        """A token for the client certificate the session presents, from the cert auth method
        at ``auth/<cert_path>`` (as ``cert_role``, else any role that trusts the certificate)."""
        o = self.options
        body = {"name": o.cert_role} if o.cert_role else {}
        what = f"a client certificate login{f' as role {o.cert_role!r}' if o.cert_role else ''} at auth/{o.cert_path}"

        def fn(c: Any) -> str:
            try:
                reply = c.adapter.post(f"/v1/auth/{o.cert_path}/login", json=body)
            except hvac.exceptions.InvalidRequest:  # 400: no role trusts it (another CA, an expired cert)
                raise errors.RemoteDenied(
                    f"remote {o.name!r} refused {what}: no role there trusts the certificate {o.client_cert} "
                    "(another CA signed it, it expired, or it does not match the role)"
                ) from None
            token: str = reply["auth"]["client_token"]
            return token

        return self.run(what, None, fn, deadline)


def _found(e: BaseException, kind: type[BaseException], depth: int = 0) -> BaseException | None:
    """``kind`` in ``e`` or in what it wraps (requests wraps urllib3, which wraps the socket's error)."""
    if isinstance(e, kind):
        return e
    if depth > 6:
        return None
    inner = [*e.args, getattr(e, "reason", None), e.__cause__, e.__context__]
    for x in inner:
        if isinstance(x, BaseException) and (found := _found(x, kind, depth + 1)) is not None:
            return found
    return None


def _why(e: BaseException) -> str:
    """What went wrong, without the text of the exception (it may quote a request)."""
    untrusted = _found(e, http.UntrustedListener)
    if untrusted is not None:
        return str(untrusted)  # made by agent.remotes.http: names a host, a port or a path, and a uid
    if isinstance(e, http.RefusedRedirect):
        return "redirected to a URL that is not one of this remote's (not followed)"
    if isinstance(e, requests.exceptions.InvalidHeader):
        return "the token has characters no token has (spaces or control characters)"
    if isinstance(e, requests.exceptions.SSLError):
        problem = http.tls_problem(e)  # OpenSSL's words: a name that does not match, an unknown issuer
        if problem is not None:
            return f"TLS verification failed: {problem} (see ca_file, tls_server_name)"
        return "the TLS handshake failed (is a client certificate required?)"
    if isinstance(e, requests.Timeout):
        return "timed out"
    if isinstance(e, requests.ConnectionError):
        return "connection failed"
    if isinstance(e, hvac.exceptions.VaultDown):
        return "sealed or down (503)"
    return type(e).__name__
