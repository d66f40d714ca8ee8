"""An OpenBao remote's connection and login options: its namespace, the name its nodes'
certificates are checked against, a client certificate, and whether the agent logs in
with that certificate by itself (``auth = "cert"``, OpenBao's ``cert`` auth method).

Rules of this module:
- it parses and checks only, at ``agent start`` (``agent.remotes.parse``): every problem
  is one ``ConfigError`` line naming the file, the table, the key and, for a file, its path;
- the client key is a secret file, held to what ``ca_file`` is held to (an absolute path
  to a file that exists) and more: it must be this user's and no one else may read it
  (as ssh holds a private key, and ``--passphrase-file`` is held), it must match the
  certificate, and it must not be encrypted (the agent has no one to ask for a password);
  nothing of the key or the certificate is quoted in an error;
- these options need ``https://`` nodes: a client certificate or a server name means
  nothing to plain ``http://`` or a Unix socket, and is refused rather than ignored.
"""

from __future__ import annotations

import ipaddress
import os
import re
import ssl
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from client.config import ConfigError

__all__ = ["KEYS", "AUTHS", "parse"]

KEYS: Final = ("namespace", "tls_server_name", "client_cert", "client_key", "auth", "cert_role", "cert_path")
# "token": whatever `agent remote login` is given (a token, an AppRole, a JWT); "cert": the client certificate
AUTHS: Final = ("token", "cert")
_SEGMENT: Final = re.compile(r"[A-Za-z0-9_.-]+")
_HOST_LABEL: Final = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


def _path_segments(value: Any, key: str, where: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{where}: {key!r} must be a string")
    text = value.strip("/")
    if not text or not all(_SEGMENT.fullmatch(p) for p in text.split("/")):
        raise ConfigError(f"{where}: {key!r} must be path segments of letters, digits, '_', '.', '-', got {text!r}")
    return text


def _server_name(value: Any, where: str) -> str:
    """A DNS name or an IP address, as a certificate names its host."""
    if isinstance(value, str):
        try:
            return str(ipaddress.ip_address(value))
        except ValueError:
            pass
        name = value.rstrip(".").lower()
        if 0 < len(name) <= 253 and all(_HOST_LABEL.fullmatch(label) for label in name.split(".")):
            return name
    raise ConfigError(f"{where}: 'tls_server_name' must be a host name such as \"bao.internal\", got {value!r}")


def _file(value: Any, key: str, where: str) -> Path:
    """An absolute path (or one under ~) to a file that exists, as ``ca_file`` is held."""
    if not isinstance(value, str) or not Path(os.path.expanduser(value)).is_absolute():
        raise ConfigError(f"{where}: {key!r} must be an absolute path (or start with ~)")
    path = Path(os.path.expanduser(value))
    if not path.is_file():
        raise ConfigError(f"{where}: {key!r} {path} is not a file that can be read")
    return path


def _private(path: Path, where: str) -> None:
    """The client key: this user's, and no one else's to read (group and others have no access)."""
    if not hasattr(os, "getuid"):
        return  # Windows: the user's profile carries the user's own ACL
    st = path.stat()
    if st.st_uid != os.getuid():
        raise ConfigError(f"{where}: 'client_key' {path} belongs to uid {st.st_uid}, not to this user")
    if st.st_mode & 0o077:
        raise ConfigError(
            f"{where}: 'client_key' {path} may be read by others (mode {stat.S_IMODE(st.st_mode):04o}); "
            f"chmod 600 {path}"
        )


def _encrypted() -> bytes:
    raise _Encrypted


class _Encrypted(Exception):
    """The key asked for a password: the agent has no one to ask."""


def _pair(cert: Path, key: Path, where: str) -> None:
    """The certificate and the key load together (a TLS handshake would use them so)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        context.load_cert_chain(cert, key, password=_encrypted)
    except _Encrypted:
        raise ConfigError(
            f"{where}: 'client_key' {key} is encrypted; the agent cannot ask for its password: "
            "give it an unencrypted key that only you may read"
        ) from None
    except (ssl.SSLError, OSError) as e:
        why = "the key does not match the certificate" if "MISMATCH" in str(e) else "not a PEM certificate and key"
        raise ConfigError(f"{where}: 'client_cert' {cert} and 'client_key' {key}: {why}") from None


def parse(table: Mapping[str, Any], urls: tuple[str, ...], where: str) -> dict[str, Any]:
    """The ``RemoteOptions`` fields of these keys in ``table`` (a ``[remote.NAME]`` of kind openbao)."""
    kw: dict[str, Any] = {}
    if "namespace" in table:
        kw["namespace"] = _path_segments(table["namespace"], "namespace", where)
    if "tls_server_name" in table:
        kw["tls_server_name"] = _server_name(table["tls_server_name"], where)
    if ("client_cert" in table) != ("client_key" in table):
        raise ConfigError(f"{where}: 'client_cert' and 'client_key' go together (a certificate and its key)")
    if "client_cert" in table:
        kw["client_cert"] = _file(table["client_cert"], "client_cert", where)
        kw["client_key"] = _file(table["client_key"], "client_key", where)
        _private(kw["client_key"], where)
        _pair(kw["client_cert"], kw["client_key"], where)
    tls = [k for k in ("tls_server_name", "client_cert") if k in kw]
    if tls and not all(u.startswith("https://") for u in urls):
        raise ConfigError(f"{where}: {tls[0]!r} needs https:// node addresses (it means nothing without TLS)")
    auth = table.get("auth", "token")
    if auth not in AUTHS:
        raise ConfigError(f"{where}: 'auth' must be one of {', '.join(map(repr, AUTHS))}, got {auth!r}")
    kw["auth"] = auth
    if auth == "cert" and "client_cert" not in kw:
        raise ConfigError(
            f"{where}: auth = \"cert\" needs 'client_cert' and 'client_key' (the certificate it logs in with)"
        )
    for key in ("cert_role", "cert_path"):
        if key in table:
            if auth != "cert":
                raise ConfigError(f'{where}: {key!r} goes with auth = "cert"')
            kw[key] = _path_segments(table[key], key, where)
    if "/" in kw.get("cert_role", ""):
        raise ConfigError(
            f"{where}: 'cert_role' is the name of one role of the cert auth method, got {kw['cert_role']!r}"
        )
    return kw
