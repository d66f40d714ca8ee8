"""The calls to one AWS Secrets Manager remote (``kind = "aws-secrets-manager"``), behind
``agent.remotes.kinds.Backend``: listings, reads, writes and deletes of the secrets under
the prefix, and the credentials' lookup.

Names, written down once:
- the secret ``<prefix>/<name>`` is the agent's platform ``name`` (through the canonical
  names, as every remote's: ``agent.remotes.upstream``); a name with a further ``/`` is a
  folder, not served, and said so in status;
- a plain string secret is one credential, of the default type ``api-key``; a secret
  whose string is a JSON object of string values is one credential per key (``{"api-key":
  ..., "org-id": ...}``); a binary secret, or JSON with other values, serves nothing;
- a write of the ``api-key`` type alone writes a plain string, of anything more a JSON
  object; the agent's metadata (``--meta``, ``--expires``) are the secret's tags;
- a version is Secrets Manager's version id of the version staged ``AWSCURRENT``.

Rules of this module:
- it is the only module that imports boto3 and botocore; their exceptions are translated
  here: no answer (a connection error, a timeout, a 5xx, throttling) ->
  ``RemoteUnavailable``; a refusal (``AccessDenied*``, unknown or expired credentials, an
  HTTP 403) -> ``RemoteDenied``; no such secret -> None; none carries a value;
- credentials come from boto3's standard chain only (environment, shared config and
  profiles, SSO cache, instance and container roles), never from the config file: the
  token the agent holds for this remote is ``kinds.CHAIN``, a marker never sent;
- Secrets Manager has no check-and-set. A write checks that ``AWSCURRENT`` is still the
  version the agent saw, writes with a ``ClientRequestToken`` of its own (so a retry is
  one version), then checks that the version it replaced is the one it saw: if another
  writer came in between, ``AWSCURRENT`` is moved back to that writer's version and the
  write is a ``Conflict``. A new secret is created only if none exists (else ``Conflict``);
- every call blocks, in one of the remote's worker threads, with boto3's own retries off
  (the agent backs off itself) and each request bounded by the remote's ``timeout``;
- a plain ``http://`` ``endpoint_url`` is accepted for loopback only (an emulator), and
  unlike OpenBao's listener its owner is not checked: botocore's connections are its own.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, Final, TypeVar

import boto3
import botocore.config
import botocore.exceptions

from agent.remotes import Mount, RemoteOptions, Secret, SecretMeta, TokenInfo, Version
from client import errors
from client.protocol import DEFAULT_TYPE

__all__ = ["Nodes", "values_of", "string_of"]

log = logging.getLogger("agent.remotes")
logging.getLogger("botocore").setLevel(logging.WARNING)  # its debug lines name every request
logging.getLogger("urllib3").setLevel(logging.WARNING)
T = TypeVar("T")
CURRENT: Final = "AWSCURRENT"
PREVIOUS: Final = "AWSPREVIOUS"
_DENIED: Final = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "ExpiredToken",
        "ExpiredTokenException",
        "InvalidSignatureException",
        "SignatureDoesNotMatch",
        "403",
    }
)
_ABSENT: Final = frozenset({"ResourceNotFoundException"})
_CONFLICT: Final = frozenset({"ResourceExistsException"})
_DELETED: Final = "deleted"  # InvalidRequestException's message for a secret scheduled for deletion


def values_of(text: str | None) -> dict[str, str]:
    """A secret's string as credentials: a JSON object of strings is one per key, any
    other string one of the default type; nothing for a binary secret."""
    if text is None:
        return {}
    if text.lstrip().startswith("{"):
        try:
            data = json.loads(text)
        except ValueError:
            return {DEFAULT_TYPE: text}
        if isinstance(data, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
            return dict(data)
        return {}
    return {DEFAULT_TYPE: text}


def string_of(values: dict[str, str]) -> str:
    """What a write stores: the default type alone as a plain string, else a JSON object."""
    if set(values) == {DEFAULT_TYPE}:
        return values[DEFAULT_TYPE]
    return json.dumps(values, sort_keys=True)


def _tags(described: dict[str, Any]) -> dict[str, str]:
    tags = described.get("Tags") or []
    return {t["Key"]: t["Value"] for t in tags if isinstance(t.get("Key"), str) and isinstance(t.get("Value"), str)}


def _current(described: dict[str, Any]) -> str:
    stages = described.get("VersionIdsToStages") or {}
    return next((str(v) for v, s in stages.items() if CURRENT in s), "")


def _time(value: Any) -> float:
    return float(value.timestamp()) if hasattr(value, "timestamp") else 0.0


class Nodes:
    """One Secrets Manager endpoint (a region's, or ``endpoint_url``)."""

    has_mount = False

    def __init__(self, options: RemoteOptions) -> None:
        self.options = options
        self.endpoint = options.urls[0] if options.urls else None
        self.last_node: str | None = None
        self.last_error: str | None = None
        self.calls = 0
        self.epoch = 0
        self._local = threading.local()  # boto3 clients are not shared across threads
        self._config = botocore.config.Config(
            connect_timeout=options.timeout,
            read_timeout=options.timeout,
            retries={"max_attempts": 1, "mode": "standard"},
        )

    def __repr__(self) -> str:
        return f"Nodes({self.options.name!r}, aws-secrets-manager {self.options.region})"

    def _client(self, service: str) -> Any:
        clients: dict[str, Any] = self._local.__dict__.setdefault("clients", {})
        client = clients.get(service)
        if client is None:
            session = boto3.session.Session()  # its own: the default session is not thread-safe
            client = clients[service] = session.client(
                service, region_name=self.options.region, endpoint_url=self.endpoint, config=self._config
            )
            client.meta.events.register("before-send", self._sent)  # every HTTP request, counted
        return client

    def _sent(self, **_: Any) -> None:
        self.calls += 1

    def _name(self, name: str) -> str:
        return self.options.path(name)

    def run(self, what: str, fn: Callable[[Any], T], deadline: float, service: str = "secretsmanager") -> T:
        """``fn(client)``, translated; one request (boto3 retries nothing), before ``deadline``."""
        name, epoch = self.options.name, self.epoch
        if time.monotonic() >= deadline:
            raise errors.RemoteUnavailable(f"remote {name!r}: deadline passed before {what}")
        try:
            result = fn(self._client(service))
        except botocore.exceptions.ClientError as e:
            error = e.response.get("Error") or {}
            code, status = str(error.get("Code") or ""), e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            self.last_node, self.last_error = self.endpoint or self.options.region, None
            if code in _DENIED or status == 403:
                raise errors.RemoteDenied(
                    f"remote {name!r} denied {what} (AWS said {code or status}: the credentials' policy does not "
                    "allow it, or they are no longer valid)"
                ) from None
            if code in _CONFLICT:
                raise errors.Conflict(f"{what}: it exists upstream already; nothing was written") from None
            if (isinstance(status, int) and (status >= 500 or status == 429)) or "Throttl" in code:
                self.last_error = f"{code or status}"
                raise errors.RemoteUnavailable(f"remote {name!r} answered {what} with {code or status}") from None
            raise errors.BadRequest(f"remote {name!r} refused {what} ({code or status})") from None
        except botocore.exceptions.NoCredentialsError:
            raise errors.RemoteDenied(
                f"remote {name!r}: boto3 found no AWS credentials (environment, ~/.aws, SSO, instance role)"
            ) from None
        except (botocore.exceptions.BotoCoreError, OSError) as e:
            self.last_error = type(e).__name__
            raise errors.RemoteUnavailable(f"remote {name!r}: no answer to {what} ({type(e).__name__})") from None
        if self.epoch != epoch:
            raise errors.Locked()
        self.last_node, self.last_error = self.endpoint or self.options.region, None
        return result

    def _absent(self, fn: Callable[[Any], T]) -> Callable[[Any], T | None]:
        def call(c: Any) -> T | None:
            try:
                return fn(c)
            except botocore.exceptions.ClientError as e:
                if str((e.response.get("Error") or {}).get("Code") or "") in _ABSENT:
                    return None
                error = e.response.get("Error") or {}
                if error.get("Code") == "InvalidRequestException" and _DELETED in str(error.get("Message") or ""):
                    return None  # scheduled for deletion: as good as absent
                raise

        return call

    # --- the Backend calls --------------------------------------------------------------------
    def names(self, token: str, deadline: float) -> list[str] | None:
        """The names under the prefix (secrets scheduled for deletion are not listed); a name
        with a further ``/`` is given as its folder."""
        prefix = f"{self.options.prefix}/" if self.options.prefix else ""

        def fn(c: Any) -> list[str]:
            found: set[str] = set()
            kw: dict[str, Any] = {"MaxResults": 100}
            if prefix:
                kw["Filters"] = [{"Key": "name", "Values": [prefix]}]
            while True:
                page = c.list_secrets(**kw)
                for s in page.get("SecretList", []):
                    full = str(s.get("Name") or "")
                    if full.startswith(prefix) and full != prefix:
                        rest = full[len(prefix) :]
                        found.add(rest.split("/")[0] + "/" if "/" in rest else rest)
                token_next = page.get("NextToken")
                if not token_next:
                    return sorted(found)
                if time.monotonic() >= deadline:  # a part of a listing would drop the rest from the cache
                    raise errors.RemoteUnavailable(
                        f"remote {self.options.name!r}: the listing of {prefix or '(no prefix)'} did not end "
                        "within the deadline"
                    )
                kw["NextToken"] = token_next

        return self.run(f"the list of secrets under {prefix or '(no prefix)'}", fn, deadline)

    def mount(self, token: str, deadline: float) -> Mount | None:
        return Mount("", "", "")

    def meta(self, token: str, name: str, deadline: float) -> SecretMeta | None:
        def fn(c: Any) -> SecretMeta:
            d = c.describe_secret(SecretId=self._name(name))
            return SecretMeta(
                _current(d),
                d.get("DeletedDate") is not None,
                _tags(d),
                _time(d.get("CreatedDate")),
                _time(d.get("LastChangedDate")),
            )

        return self.run(f"the description of {self._name(name)}", self._absent(fn), deadline)

    def read(self, token: str, name: str, deadline: float) -> Secret | None:
        def fn(c: Any) -> Secret:
            v = c.get_secret_value(SecretId=self._name(name), VersionStage=CURRENT)
            d = c.describe_secret(SecretId=self._name(name))  # its tags: the agent's metadata
            created = _time(v.get("CreatedDate"))
            return Secret(str(v["VersionId"]), values_of(v.get("SecretString")), _tags(d), created, created)

        return self.run(f"a read of {self._name(name)}", self._absent(fn), deadline)

    def write(
        self,
        token: str,
        name: str,
        values: dict[str, str],
        custom: dict[str, str] | None,
        cas: Version,
        deadline: float,
    ) -> Version:
        """A new ``AWSCURRENT`` version if the current one is still ``cas`` (falsy: none yet)."""
        secret_id, mine = self._name(name), str(uuid.uuid4())
        what = f"{secret_id} (version {cas or 'none'})"
        conflict = errors.Conflict(
            f"{what} changed upstream since this agent read it; nothing was written "
            f"(`agent remote sync {self.options.name}`, then retry)"
        )
        tags = [{"Key": k, "Value": v} for k, v in (custom or {}).items()]

        def fn(c: Any) -> str:
            if not cas:
                kw: dict[str, Any] = {"Tags": tags} if tags else {}
                c.create_secret(Name=secret_id, SecretString=string_of(values), ClientRequestToken=mine, **kw)
                return mine
            if _current(c.describe_secret(SecretId=secret_id)) != cas:
                raise conflict
            c.put_secret_value(SecretId=secret_id, SecretString=string_of(values), ClientRequestToken=mine)
            stages = c.describe_secret(SecretId=secret_id).get("VersionIdsToStages") or {}
            replaced = next((str(v) for v, s in stages.items() if PREVIOUS in s), "")
            if replaced != cas:  # another writer between the check and the write: theirs stays current
                c.update_secret_version_stage(
                    SecretId=secret_id, VersionStage=CURRENT, MoveToVersionId=replaced, RemoveFromVersionId=mine
                )
                raise conflict
            if custom is not None:
                old = _tags(c.describe_secret(SecretId=secret_id))
                gone = [k for k in old if k not in custom]
                if gone:
                    c.untag_resource(SecretId=secret_id, TagKeys=gone)
                if tags:
                    c.tag_resource(SecretId=secret_id, Tags=tags)
            return mine

        return self.run(f"a write of {what}", fn, deadline)

    def delete_version(self, token: str, name: str, version: Version, deadline: float) -> None:
        """Delete the secret (reversibly: 7 days' recovery window) if ``version`` is still current."""
        secret_id = self._name(name)

        def fn(c: Any) -> None:
            if _current(c.describe_secret(SecretId=secret_id)) != version:
                raise errors.Conflict(f"{secret_id} changed upstream since this agent read it; nothing was deleted")
            c.delete_secret(SecretId=secret_id, RecoveryWindowInDays=7)

        self.run(f"a delete of {secret_id}", fn, deadline)

    def lookup_self(self, token: str, deadline: float) -> TokenInfo:
        """Who the credentials are (STS), and whether they may still list the prefix: a
        refusal of either is the remote refusing this agent."""
        arn = self.run("a credentials lookup", lambda c: str(c.get_caller_identity().get("Arn")), deadline, "sts")
        kw: dict[str, Any] = {"MaxResults": 1}
        if self.options.prefix:
            kw["Filters"] = [{"Key": "name", "Values": [f"{self.options.prefix}/"]}]
        self.run("a listing of the prefix", lambda c: c.list_secrets(**kw), deadline)
        return TokenInfo(0.0, False, (arn,))

    def renew_self(self, token: str, deadline: float) -> float:
        return 0.0  # boto3 refreshes what its chain gives (SSO, roles) by itself

    def approle_login(self, role_id: str, secret_id: str, deadline: float) -> str:
        raise errors.BadRequest(f"remote {self.options.name!r} is AWS Secrets Manager: no AppRole login")

    def jwt_login(self, role: str, jwt: str, deadline: float) -> str:
        raise errors.BadRequest(f"remote {self.options.name!r} is AWS Secrets Manager: no JWT login")

    def cert_login(self, deadline: float) -> str:
        raise errors.BadRequest(f"remote {self.options.name!r} is AWS Secrets Manager: no client certificate login")
