"""The HTTP sessions of the team vault's calls: who may receive a request, and where it may go.

Loopback is shared by every user of the machine: a port the node is not listening on
(a dev node not running, a restart, a dropped ``ssh -L`` tunnel, ``localhost`` resolving
to ``::1`` while the node listens on 127.0.0.1) can be taken by any local user, who
would then receive the token, an AppRole's secret id and every value written through.

Rules of this module (the one that imports requests and urllib3):
- a plain ``http://`` connection to a loopback address is used only once the kernel says
  its other end belongs to this user (or root, or the remote's ``listener_user``): the
  accepted socket's owner in ``/proc/net/tcp`` and ``tcp6``, checked after ``connect()``
  and before a byte is sent; where the kernel cannot tell (no ``/proc/net``), such a
  connection is refused: use ``https://`` with ``ca_file``, or a ``unix://`` socket;
- a ``unix://`` URL reaches OpenBao's Unix-socket listener (or a tunnel's); its owner
  is the listening process's uid (``SO_PEERCRED``), checked the same way;
- ``https://`` verifies the node's certificate (``ca_file``, else the system's CAs) against
  the URL's host, or ``tls_server_name`` (sent as SNI too); the session carries the CA file
  and the client certificate itself (hvac takes a session's ``verify`` over its own);
- with a ``namespace``, a 404 "namespace not found" is ``NoNamespace``: no such namespace is
  a fault of the config, not an absent secret (which the callers take a 404 to mean);
- nothing comes from the environment (``trust_env`` off: no ``~/.netrc``, no proxy, no
  CA bundle from variables): what the config names is what is used;
- a redirect is followed only to one of the remote's own URLs, with the scheme it has
  there; any other is refused before a byte leaves (``RefusedRedirect``).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import socket
import ssl
import struct
import sys
import urllib.parse
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Final

import requests
import requests.adapters
from urllib3.connection import HTTPConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from client import transport

__all__ = [
    "UntrustedListener",
    "RefusedRedirect",
    "NoNamespace",
    "Tls",
    "session",
    "base_url",
    "is_loopback",
    "tcp_owner",
    "tls_problem",
]

UNIX_SCHEME: Final = "http+unix"  # how a unix:// node's URL travels through requests
_PROC_NET: Final = (Path("/proc/net/tcp"), Path("/proc/net/tcp6"))
_ESTABLISHED: Final = "01"


class UntrustedListener(ConnectionError):
    """The other end of a loopback or Unix-socket connection is not this user's: nothing was sent."""


class RefusedRedirect(requests.ConnectionError):
    """A node redirected to a URL that is not one of the remote's: the redirect was not followed."""


class NoNamespace(Exception):
    """A node answered that the namespace the request named does not exist there."""


@dataclasses.dataclass(frozen=True)
class Tls:
    """What an ``https://`` connection verifies and presents."""

    ca_file: Path | None = None  # else the system's CAs
    server_name: str = ""  # the name the certificate must carry; "": the URL's host
    client_cert: Path | None = None  # with client_key: presented at every handshake
    client_key: Path | None = None


def tls_problem(e: BaseException) -> str | None:
    """The certificate check that failed in ``e`` (OpenSSL's words: which name, which issuer), or None."""
    found: BaseException | None = e
    for _ in range(8):  # requests wraps urllib3's error, which wraps the ssl module's
        if found is None or isinstance(found, ssl.SSLCertVerificationError):
            break
        inner = [
            x for x in (*found.args, getattr(found, "reason", None), found.__cause__) if isinstance(x, BaseException)
        ]
        found = inner[0] if inner else None
    if not isinstance(found, ssl.SSLCertVerificationError):
        return None
    return str(found.verify_message or "certificate verify failed").rstrip(".")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _hex_address(ip: str, port: int) -> tuple[str, ...]:
    """How /proc/net/tcp{,6} print ``ip:port`` (each 32-bit word in host byte order);
    an IPv4 address also as the v4-mapped IPv6 address a dual-stack listener sees."""

    def words(packed: bytes) -> str:
        return "".join(f"{w:08X}" for w in struct.unpack(f"={len(packed) // 4}I", packed))

    try:
        packed = socket.inet_pton(socket.AF_INET, ip)
        forms = [words(packed), words(b"\0" * 10 + b"\xff\xff" + packed)]
    except OSError:
        forms = [words(socket.inet_pton(socket.AF_INET6, ip.split("%")[0]))]
    return tuple(f"{form}:{port:04X}" for form in forms)


def tcp_owner(local: tuple[str, int], peer: tuple[str, int], tables: Iterable[Path] = _PROC_NET) -> int | None:
    """The uid that owns the far end of our TCP connection ``local`` -> ``peer`` (the socket
    the listener accepted: it has the listener's owner), or None if the kernel does not list it."""
    theirs, ours = set(_hex_address(*peer[:2])), set(_hex_address(*local[:2]))
    for table in tables:
        try:
            lines = table.read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 7 and fields[3] == _ESTABLISHED and fields[1] in theirs and fields[2] in ours:
                return int(fields[7])
    return None


def _check_owner(uid: int | None, where: str, trusted: frozenset[int]) -> None:
    if uid is None:
        raise UntrustedListener(f"the owner of {where} cannot be checked here; nothing was sent")
    if uid not in trusted:
        raise UntrustedListener(f"{where} belongs to uid {uid}, not to this user; nothing was sent")


class _CheckedConnection(HTTPConnection):
    """Plain HTTP: to a loopback address only after the kernel names this user as its other end."""

    trusted: frozenset[int] = frozenset()

    def connect(self) -> None:
        super().connect()
        if not is_loopback(self.host):
            return  # the config accepts plain http:// for loopback hosts only; a redirect is checked apart
        where = f"the listener on {self.host}:{self.port}"
        try:
            local, peer = self.sock.getsockname(), self.sock.getpeername()
            owner = tcp_owner(local, peer) if sys.platform == "linux" else None
            _check_owner(owner, where, self.trusted)
        except BaseException:
            self.close()
            raise


class _UnixConnection(HTTPConnection):
    """HTTP over OpenBao's Unix-socket listener, once the listening process is this user's."""

    socket_path = ""
    trusted: frozenset[int] = frozenset()

    def connect(self) -> None:
        if sys.platform == "win32":
            raise UntrustedListener("unix:// node addresses are for Linux and macOS")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout if isinstance(self.timeout, (int, float)) else None)
            sock.connect(self.socket_path)
            _check_owner(transport.listener_uid(sock), f"the socket {self.socket_path}", self.trusted)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


class _Adapter(requests.adapters.HTTPAdapter):
    """Connections made by the classes above; a ``unix://`` node's pool per socket path."""

    def __init__(self, trusted: frozenset[int], server_name: str = "") -> None:
        self._trusted = trusted
        self._server_name = server_name
        self._unix: dict[str, HTTPConnectionPool] = {}
        super().__init__(max_retries=0)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        if self._server_name:  # SNI and the name checked; urllib3 drops it for plain http pools
            kwargs["server_hostname"] = self._server_name
        super().init_poolmanager(*args, **kwargs)
        checked = type("CheckedConnection", (_CheckedConnection,), {"trusted": self._trusted})
        plain = type("CheckedPool", (HTTPConnectionPool,), {"ConnectionCls": checked})
        self.poolmanager.pool_classes_by_scheme = {"http": plain, "https": HTTPSConnectionPool}

    def get_connection_with_tls_context(
        self, request: requests.PreparedRequest, verify: Any, proxies: Any = None, cert: Any = None
    ) -> Any:
        parts = urllib.parse.urlsplit(request.url or "")
        if parts.scheme != UNIX_SCHEME:
            return super().get_connection_with_tls_context(request, verify, proxies, cert)
        path = urllib.parse.unquote(parts.netloc)
        pool = self._unix.get(path)
        if pool is None:
            conn = type("UnixConnection", (_UnixConnection,), {"socket_path": path, "trusted": self._trusted})
            pool = self._unix[path] = type("UnixPool", (HTTPConnectionPool,), {"ConnectionCls": conn})("localhost")
        return pool

    def close(self) -> None:
        super().close()
        for pool in self._unix.values():
            pool.close()


class _Session(requests.Session):
    def __init__(self, origins: frozenset[str]) -> None:
        super().__init__()
        self.trust_env = False  # no ~/.netrc credentials, proxies or CA bundle from the environment
        self._origins = origins

    def get_redirect_target(self, resp: requests.Response) -> str | None:
        target = super().get_redirect_target(resp)
        if target is not None and _origin(urllib.parse.urljoin(resp.url, target)) not in self._origins:
            raise RefusedRedirect("a node redirected to a URL that is not one of this remote's; not followed")
        return target


def _origin(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def base_url(url: str) -> str:
    """A node's URL as requests takes it: ``unix:///run/bao.sock`` -> ``http+unix://%2Frun%2Fbao.sock``."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "unix":
        return url
    return f"{UNIX_SCHEME}://{urllib.parse.quote(parts.path, safe='')}"


def _no_namespace(response: requests.Response, *args: Any, **kwargs: Any) -> None:
    if response.status_code == 404 and b"namespace not found" in response.content[:512]:
        raise NoNamespace()


def session(
    urls: Iterable[str], listener_uids: Iterable[int] = (), tls: Tls = Tls(), namespace: str = ""
) -> requests.Session:
    """A session for one remote's nodes: checked connections, no environment, redirects among ``urls``."""
    s = _Session(frozenset(_origin(base_url(u)) for u in urls))
    s.verify = str(tls.ca_file) if tls.ca_file else True
    s.cert = (str(tls.client_cert), str(tls.client_key)) if tls.client_cert and tls.client_key else None
    if namespace:
        s.hooks["response"].append(_no_namespace)
    trusted = frozenset({os.geteuid(), 0, *listener_uids}) if hasattr(os, "geteuid") else frozenset()
    adapter = _Adapter(trusted, tls.server_name)
    for prefix in ("http://", "https://", f"{UNIX_SCHEME}://"):
        s.mount(prefix, adapter)
    return s
