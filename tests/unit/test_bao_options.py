"""An OpenBao remote's namespace, tls_server_name, client certificate and ``auth`` options,
checked at start: each problem one line naming the table, the key and the file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

import client
from agent import remotes
from support.certs import Ca


def parse(**table: Any) -> remotes.RemoteOptions:
    table.setdefault("url", "https://bao.internal:8200")
    (options,) = remotes.parse({"team": table}, "f")
    return options


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return Ca("team CA").issue(tmp_path_factory.mktemp("certs"), "ci", "ci-runner")


def test_the_options_parsed(pair: tuple[Path, Path]) -> None:
    cert, key = pair
    o = parse(namespace="/eng/ml/", tls_server_name="Bao.Internal.", client_cert=str(cert), client_key=str(key),
              auth="cert", cert_role="ci", cert_path="certs")
    assert (o.namespace, o.tls_server_name, o.client_cert, o.client_key) == ("eng/ml", "bao.internal", cert, key)
    assert (o.auth, o.cert_role, o.cert_path) == ("cert", "ci", "certs")
    plain = parse()
    assert (plain.namespace, plain.tls_server_name, plain.client_cert, plain.auth, plain.cert_path) == (
        "", "", None, "token", "cert")
    assert parse(tls_server_name="10.0.0.7").tls_server_name == "10.0.0.7"


@pytest.mark.parametrize(("table", "message"), [
    ({"namespace": "a b"}, "'namespace' must be path segments"),
    ({"namespace": ""}, "'namespace' must be path segments"),
    ({"tls_server_name": "bao internal"}, "'tls_server_name' must be a host name"),
    ({"tls_server_name": "-bao.internal"}, "'tls_server_name' must be a host name"),
    ({"tls_server_name": "bao.internal", "url": "http://127.0.0.1:8200"}, "'tls_server_name' needs https://"),
    ({"auth": "kerberos"}, "'auth' must be one of 'token', 'cert'"),
    ({"auth": "cert"}, "auth = \"cert\" needs 'client_cert' and 'client_key'"),
    ({"cert_role": "ci"}, "'cert_role' goes with auth = \"cert\""),
    ({"client_cert": "/etc/hostname"}, "'client_cert' and 'client_key' go together"),
    ({"client_cert": "ci.pem", "client_key": "ci.key"}, "'client_cert' must be an absolute path"),
])
def test_bad_options_are_one_line_at_start(table: dict[str, Any], message: str) -> None:
    with pytest.raises(client.ConfigError, match=r"f: \[remote.team\]: ") as caught:
        parse(**table)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_the_client_key_is_held_as_a_private_key_file(pair: tuple[Path, Path], tmp_path: Path) -> None:
    cert, key = pair
    missing = tmp_path / "gone.key"
    with pytest.raises(client.ConfigError, match=rf"'client_key' {missing} is not a file"):
        parse(client_cert=str(cert), client_key=str(missing))
    shared = tmp_path / "shared.key"
    shared.write_bytes(key.read_bytes())
    shared.chmod(0o640)
    with pytest.raises(client.ConfigError, match=rf"'client_key' {shared} may be read by others \(mode 0640\); "
                                                 rf"chmod 600 {shared}"):
        parse(client_cert=str(cert), client_key=str(shared))
    other = Ca("team CA").issue(tmp_path, "other", "someone")[1]
    with pytest.raises(client.ConfigError, match=r"'client_cert' .* and 'client_key' .*: the key does not match"):
        parse(client_cert=str(cert), client_key=str(other))
    from cryptography.hazmat.primitives import serialization

    private = serialization.load_pem_private_key(key.read_bytes(), None)
    locked = tmp_path / "locked.key"
    locked.touch(mode=0o600)
    locked.write_bytes(private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                             serialization.BestAvailableEncryption(b"pw")))
    with pytest.raises(client.ConfigError, match=rf"'client_key' {locked} is encrypted"):
        parse(client_cert=str(cert), client_key=str(locked))
    with pytest.raises(client.ConfigError, match="needs https://"):
        parse(client_cert=str(cert), client_key=str(key), url="unix:///run/bao.sock")
    if os.getuid() == 0:  # as root: a key another user owns (as a shared CI box might hand out)
        theirs = tmp_path / "theirs.key"
        theirs.touch(mode=0o600)
        theirs.write_bytes(key.read_bytes())
        os.chown(theirs, 65534, 65534)
        with pytest.raises(client.ConfigError, match=rf"'client_key' {theirs} belongs to uid 65534"):
            parse(client_cert=str(cert), client_key=str(theirs))
