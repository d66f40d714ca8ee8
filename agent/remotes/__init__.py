"""Team vaults behind the agent (OpenBao / Vault KV v2, AWS Secrets Manager): their options,
read from the config file's ``[remote.NAME]`` tables.

Rules of this package:
- names resolve local first, then the remotes in config order (a personal key shadows
  the team's); ``team.Remotes`` does the resolving, ``cache`` holds what was fetched
  (in memory, while unlocked; ``offline`` keeps the keys in use sealed in the vault),
  ``refresh`` keeps it current at a cost that grows with the
  keys in use only, ``upstream`` maps upstream names to the agent's, ``mounts`` checks
  the mount; each kind of remote is one module behind ``kinds.Backend`` (``openbao``, the
  only module that imports hvac; ``aws``, the only one that imports boto3);
- this module only parses options: the agent loads it at start whatever the config,
  so it imports neither hvac nor the agent's state;
- TLS verification is always on; ``http://`` is accepted for loopback hosts only, and
  used only once the kernel says the listener is this user's (``agent.remotes.http``);
  ``unix://`` names OpenBao's Unix-socket listener, checked the same way.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import os
import re
import sys
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final, Protocol

from agent.crypto import SecureStorage
from agent.remotes import bao_options
from client import config
from client.config import ConfigError
from client.validation import check_name

__all__ = [
    "AppRole",
    "Cert",
    "Hooks",
    "Jwt",
    "Login",
    "Mount",
    "NO_REMOTES",
    "RemoteOptions",
    "Secret",
    "SecretMeta",
    "Version",
    "KIND_KEYS",
    "TokenInfo",
    "parse",
    "parse_duration",
    "DEFAULTS",
]

# seconds; refresh and max_stale as docs/team-vault.md's example, a call's timeout well under a client's 15 s
DEFAULTS: Final[dict[str, Any]] = {
    "mount": "secret",
    "prefix": "",
    "refresh": 300.0,
    "poll": 30.0,
    "max_stale": 86400.0,
    "timeout": 4.0,
    "deadline": 10.0,
    "denied_grace": 60.0,
    "jwt_path": "jwt",
    "cert_path": "cert",
}
_COMMON: Final = ("kind", "prefix", "refresh", "poll", "max_stale", "timeout", "deadline", "denied_grace")
# the keys each kind of remote takes (agent.remotes.kinds has their modules); the first is the default kind
KIND_KEYS: Final[dict[str, tuple[str, ...]]] = {
    "openbao": ("url", "mount", *_COMMON[1:], "ca_file", "listener_user", "jwt_path", *bao_options.KEYS, "kind"),
    "aws-secrets-manager": ("region", "endpoint_url", *_COMMON),
}
_SEGMENT: Final = re.compile(r"[A-Za-z0-9_.-]+")
RESERVED: Final = frozenset({"local"})  # the SOURCE of the local vault's entries


@dataclasses.dataclass(frozen=True)
class RemoteOptions:
    """One ``[remote.NAME]`` table, checked."""

    name: str
    urls: tuple[str, ...]  # OpenBao's nodes; an AWS remote's endpoint_url, if any
    kind: str = "openbao"  # a key of KIND_KEYS
    region: str = ""  # an AWS remote's
    mount: str = DEFAULTS["mount"]  # a KV v2 mount
    prefix: str = DEFAULTS["prefix"]  # secrets live at <mount>/data/<prefix>/<platform>
    refresh: float = DEFAULTS["refresh"]  # seconds between background refreshes (the listing)
    # seconds between checks of the keys in use (their metadata only), so a rotation is seen
    # within it; 0: only at each refresh
    poll: float = DEFAULTS["poll"]
    max_stale: float = DEFAULTS["max_stale"]  # cached values are served this long while no node answers
    ca_file: Path | None = None  # else the system's CA bundle
    # besides this user and root: who may own a loopback or Unix-socket listener (agent.remotes.http)
    listener_uids: tuple[int, ...] = ()
    timeout: float = DEFAULTS["timeout"]  # one HTTP request to one node
    deadline: float = DEFAULTS["deadline"]  # one operation, every node tried
    # how long cached values are still served after the remote refused the token itself
    denied_grace: float = DEFAULTS["denied_grace"]
    jwt_path: str = DEFAULTS["jwt_path"]  # where OpenBao's jwt auth method is enabled (auth/<jwt_path>)
    # OpenBao's connection and login options (agent.remotes.bao_options)
    namespace: str = ""  # sent as X-Vault-Namespace with every request; "": the root namespace
    tls_server_name: str = ""  # the name the nodes' certificates are checked against; "": each URL's host
    client_cert: Path | None = None  # presented at every TLS handshake, with client_key
    client_key: Path | None = None
    auth: str = "token"  # "token": what `agent remote login` is given; "cert": the agent logs in with client_cert
    cert_role: str = ""  # the cert auth method's role (its ``name``); "": any role whose CA signed the certificate
    cert_path: str = DEFAULTS["cert_path"]  # where the cert auth method is enabled (auth/<cert_path>)

    def path(self, platform: str) -> str:
        """The secret's path below the mount."""
        return f"{self.prefix}/{platform}" if self.prefix else platform

    @property
    def check_every(self) -> float:
        """Seconds between background checks of the keys in use: ``poll``, at most ``refresh``."""
        return min(self.poll, self.refresh) if self.poll > 0 else self.refresh


Version = int | str  # KV v2's version number, Secrets Manager's version id; 0 or "": none


@dataclasses.dataclass(frozen=True, repr=False)
class Secret:
    """One secret version upstream: its keys are credential types, its values the secrets."""

    version: Version
    values: dict[str, str]
    custom: dict[str, str]  # custom_metadata: the agent's metadata and expiry
    created: float
    updated: float

    def __repr__(self) -> str:
        return f"Secret(version={self.version}, types={sorted(self.values)!r}, <values hidden>)"


@dataclasses.dataclass(frozen=True)
class SecretMeta:
    version: Version  # the current version; 0 or "" for none
    deleted: bool  # the current version is deleted or destroyed
    custom: dict[str, str]
    created: float
    updated: float


@dataclasses.dataclass(frozen=True)
class TokenInfo:
    ttl: float  # seconds left; 0 = never expires
    renewable: bool
    policies: tuple[str, ...]
    creation_ttl: float = 0.0  # the TTL it was made with: what a renewal gives back, short of its max TTL


@dataclasses.dataclass(frozen=True)
class Mount:
    """The secrets engine mounted where a path is, as ``sys/internal/ui/mounts/PATH`` says
    (the one mount lookup a token with no ``sys/mounts`` capability may make)."""

    path: str  # the mount's own path, with its trailing slash: "secret/"
    kind: str  # "kv", "transit", ...; "" where the node has no such endpoint
    version: str  # a kv mount's version: "1" or "2"


@dataclasses.dataclass(frozen=True, repr=False)
class AppRole:
    """An AppRole's credentials, kept (sealed) so the agent can log in again by itself."""

    role_id: str
    secret_id: str

    def __repr__(self) -> str:
        return "AppRole(<hidden>)"


@dataclasses.dataclass(frozen=True, repr=False)
class Jwt:
    """A JWT login (OpenBao's ``jwt`` auth method, as CI systems hand a job a JWT): its role,
    and the JWT itself or the file it is read from again at each login (a file that its
    issuer renews in place, as Kubernetes and CI runners do)."""

    role: str
    jwt: str | None  # given once (from an environment variable or stdin): used again while it is valid
    path: str | None  # read again at each login

    def __repr__(self) -> str:
        return f"Jwt(role={self.role!r}, {'file' if self.path else '<hidden>'})"


@dataclasses.dataclass(frozen=True)
class Cert:
    """A login with the remote's client certificate (``auth = "cert"``): nothing secret is held
    but the key file the config names, so nothing is sealed beyond the token."""

    role: str  # "" : any role of the cert auth method that trusts the certificate


Login = AppRole | Jwt | Cert  # how the agent logs in again by itself when its token reaches its end


def parse_duration(value: Any, where: str) -> float:
    """Seconds from a number or a duration string, as every other setting takes them
    (``client.config.parse_duration``: ``"24h"``, ``"1h30m"``, ``"900"``)."""
    seconds: float | None = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str):
        with contextlib.suppress(ValueError):
            seconds = config.parse_duration(value)
    if seconds is None:
        raise ConfigError(f'{where} must be a number of seconds or a duration such as "24h", got {value!r}')
    if not 0 <= seconds < float("inf"):
        raise ConfigError(f"{where} must be 0 or more seconds")
    return seconds


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_url(url: Any, where: str) -> str:
    if not isinstance(url, str):
        raise ConfigError(f"{where}: 'url' must be a string or a list of strings")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "unix":  # OpenBao's Unix-socket listener, or a tunnel's: unix:///run/openbao/bao.sock
        if parts.netloc or not parts.path.startswith("/") or parts.query or parts.fragment:
            raise ConfigError(f"{where}: {url!r} is not a socket address such as unix:///run/openbao/bao.sock")
        return url
    host = parts.hostname or ""
    if (
        parts.scheme not in ("https", "http")
        or not host
        or parts.query
        or parts.fragment
        or parts.path not in ("", "/")
    ):
        raise ConfigError(
            f"{where}: {url!r} is not a node address such as https://bao-1:8200 or unix:///run/openbao/bao.sock"
        )
    if parts.username or parts.password:
        raise ConfigError(f"{where}: a node address carries no user or password; use `agent remote login`")
    if parts.scheme == "http" and not _loopback(host):
        raise ConfigError(
            f"{where}: {url!r} is plain http to a host that is not loopback; use https:// "
            "(TLS verification is always on)"
        )
    return str(url).rstrip("/")


def _uid(value: Any, where: str) -> int:
    """A user name or uid whose loopback or Unix-socket listener is trusted besides this user's and root's."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and value:
        if sys.platform == "win32":
            raise ConfigError(f"{where}: user names and uids are POSIX's; there is no such listener owner on Windows")
        import pwd

        try:
            return pwd.getpwnam(value).pw_uid
        except KeyError:
            raise ConfigError(f"{where}: no user named {value!r} on this machine") from None
    raise ConfigError(f"{where}: must be a user name or a uid, got {value!r}")


def _segments(value: Any, key: str, where: str, allow_empty: bool) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{where}: {key!r} must be a string")
    text: str = value.strip("/")
    if (not text and not allow_empty) or not all(_SEGMENT.fullmatch(p) for p in text.split("/") if text):
        raise ConfigError(f"{where}: {key!r} must be path segments of letters, digits, '_', '.', '-', got {text!r}")
    return text


def _one(name: str, table: Mapping[str, Any], where: str) -> RemoteOptions:
    where = f"{where}: [remote.{name}]"
    try:
        check_name(name, "remote name")
    except ValueError as e:
        raise ConfigError(f"{where}: {e}") from None
    if name in RESERVED:
        raise ConfigError(f"{where}: {name!r} is reserved (it is the SOURCE of local entries)")
    kind = table.get("kind", "openbao")
    if kind not in KIND_KEYS:
        raise ConfigError(f"{where}: 'kind' must be one of {', '.join(map(repr, KIND_KEYS))}, got {kind!r}")
    known = KIND_KEYS[kind]
    unknown = sorted(set(table) - set(known))
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r} for a {kind} remote (known: {', '.join(known)})")
    kw: dict[str, Any] = {"name": name, "kind": kind}
    if kind == "aws-secrets-manager":
        kw.update(_aws(table, where))
    else:
        raw = table.get("url")
        urls = [raw] if isinstance(raw, str) else raw
        if not isinstance(urls, list) or not urls:
            raise ConfigError(f"{where}: 'url' must be a node address or a list of them")
        kw["urls"] = tuple(check_url(u, where) for u in urls)
        kw.update(bao_options.parse(table, kw["urls"], where))
    for key in ("refresh", "poll", "max_stale", "timeout", "deadline", "denied_grace"):
        if key in table:
            kw[key] = parse_duration(table[key], f"{where}: {key!r}")
    for key in ("timeout", "deadline"):
        if key in kw and kw[key] <= 0:
            raise ConfigError(f"{where}: {key!r} must be more than 0 seconds")
    if "listener_user" in table:
        kw["listener_uids"] = (_uid(table["listener_user"], f"{where}: 'listener_user'"),)
    if "mount" in table:
        kw["mount"] = _segments(table["mount"], "mount", where, allow_empty=False)
    if "prefix" in table:
        kw["prefix"] = _segments(table["prefix"], "prefix", where, allow_empty=True)
    if "jwt_path" in table:
        kw["jwt_path"] = _segments(table["jwt_path"], "jwt_path", where, allow_empty=False)
    if "ca_file" in table:
        ca = table["ca_file"]
        if not isinstance(ca, str) or not Path(os.path.expanduser(ca)).is_absolute():
            raise ConfigError(f"{where}: 'ca_file' must be an absolute path (or start with ~)")
        kw["ca_file"] = Path(os.path.expanduser(ca))
        if not kw["ca_file"].is_file():
            raise ConfigError(f"{where}: 'ca_file' {kw['ca_file']} is not a file that can be read")
    return RemoteOptions(**kw)


def _aws(table: Mapping[str, Any], where: str) -> dict[str, Any]:
    """An AWS remote's own keys: a region, and an endpoint (else AWS's own for the region).
    Credentials are never here: boto3's standard chain finds them."""
    region = table.get("region")
    if not isinstance(region, str) or not re.fullmatch(r"[a-z]{2}(-[a-z]+)+-\d+", region):
        raise ConfigError(f"{where}: 'region' must be an AWS region such as \"eu-west-1\", got {region!r}")
    kw: dict[str, Any] = {"region": region, "urls": ()}
    if "endpoint_url" in table:
        kw["urls"] = (check_url(table["endpoint_url"], f"{where}: 'endpoint_url'"),)
        if kw["urls"][0].startswith("unix:"):
            raise ConfigError(f"{where}: 'endpoint_url' must be an https:// (or loopback http://) address")
    return kw


def parse(tables: Mapping[str, Any] | None, where: str) -> tuple[RemoteOptions, ...]:
    """The ``[remote.NAME]`` tables of the config file at ``where``, in file order."""
    return tuple(_one(name, table, where) for name, table in (tables or {}).items())


class Hooks(Protocol):
    """What the agent's state tells its team vaults (``agent.state`` knows nothing more of them)."""

    def forget(self) -> None:
        """The agent locked: drop every token and cached value now."""

    def unlocked(self, storage: SecureStorage) -> None:
        """The agent unlocked with ``storage``: open the tokens, refresh soon."""


class _NoRemotes:
    def __repr__(self) -> str:
        return "NO_REMOTES"

    def forget(self) -> None:
        pass

    def unlocked(self, storage: SecureStorage) -> None:
        pass


NO_REMOTES: Final[Hooks] = _NoRemotes()
