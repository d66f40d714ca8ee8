"""AWS Secrets Manager as a remote, against moto's standalone server (an emulator of the
Secrets Manager, STS and IAM APIs, on loopback, reached by the real boto3 over HTTP; not
AWS): how secret names and values map to credentials (a plain string is one credential,
a JSON object one per key), writes in either shape, rm, the config's checks, status, and
that boto3 is loaded only by an agent whose config names an AWS remote. The behaviour
every kind shares is tests/contracts/remote_contract.py's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from client import errors
from support import ROOT, AgentProcess, short_tmpdir
from support.aws import Moto, aws_config, moto_available, start_aws_agent
from support.openbao import Relay

pytestmark = pytest.mark.skipif(not moto_available(), reason="no boto3 or moto (pip install 'boto3' 'moto[server]')")


@pytest.fixture(scope="module")
def moto() -> Iterator[Moto]:
    m = Moto()
    try:
        yield m.start()
    finally:
        m.stop()


@pytest.fixture
def aws_agent(moto: Moto) -> Iterator[AgentProcess]:
    a = start_aws_agent(moto.url, moto.member(), refresh=3600)
    yield a
    a.cleanup()


def secret(moto: Moto, name: str) -> str:
    """The AWSCURRENT string: asked by stage, since moto (5.x) answers a read with no stage
    from the version last written even after UpdateSecretVersionStage moved AWSCURRENT
    (AWS answers AWSCURRENT's, as the agent asks)."""
    sm = moto.client("secretsmanager")
    return str(sm.get_secret_value(SecretId=f"ml-team/{name}", VersionStage="AWSCURRENT")["SecretString"])


def test_a_plain_string_secret_is_one_api_key(moto: Moto, aws_agent: AgentProcess) -> None:
    moto.client("secretsmanager").create_secret(Name="ml-team/OpenAI", SecretString="sk-" + "p" * 30)
    with aws_agent.client() as c:
        assert c.get("openai") == "sk-" + "p" * 30  # the canonical name, as every remote's
        assert [(e["credential_type"], e["source"]) for e in c.list() if e["platform"] == "openai"] == [
            ("api-key", "team")
        ]


def test_a_json_object_secret_is_one_credential_per_key(moto: Moto, aws_agent: AgentProcess) -> None:
    values = {"API_KEY": "k" * 30, "org-id": "org-" + "o" * 20}
    moto.client("secretsmanager").create_secret(Name="ml-team/wandb", SecretString=json.dumps(values))
    moto.client("secretsmanager").create_secret(Name="ml-team/numbers", SecretString='{"api-key": 12345}')
    with aws_agent.client() as c:
        assert c.get("wandb") == "k" * 30  # API_KEY through the canonical types, as every remote's
        assert c.get("wandb", "org-id") == "org-" + "o" * 20
        assert sorted(e["credential_type"] for e in c.list() if e["platform"] == "wandb") == ["api-key", "org-id"]
        with pytest.raises(errors.NotFound):
            c.get("numbers")  # JSON whose values are not strings: no credential


def test_writes_keep_the_shape_and_rm_deletes_recoverably(moto: Moto, aws_agent: AgentProcess) -> None:
    a = aws_agent
    done = a.cli("set", "groq", "--remote", "team", "--meta", "owner=ml", input="g" * 30 + "\n")
    assert done.returncode == 0, done.stderr
    assert secret(moto, "groq") == "g" * 30  # the default type alone: a plain string
    tags = moto.client("secretsmanager").describe_secret(SecretId="ml-team/groq")["Tags"]
    assert {t["Key"]: t["Value"] for t in tags} == {"owner": "ml"}
    done = a.cli("set", "groq", "--type", "org-id", "--remote", "team", input="org-" + "x" * 20 + "\n")
    assert done.returncode == 0, done.stderr
    assert json.loads(secret(moto, "groq")) == {"api-key": "g" * 30, "org-id": "org-" + "x" * 20}
    assert a.cli("rm", "groq", "--type", "org-id", "--remote", "team").returncode == 0
    assert secret(moto, "groq") == "g" * 30
    assert a.cli("rm", "groq", "--remote", "team").returncode == 0
    described = moto.client("secretsmanager").describe_secret(SecretId="ml-team/groq")
    assert described.get("DeletedDate") is not None  # scheduled, within its recovery window
    with a.client() as c, pytest.raises(errors.NotFound):
        c.get("groq")


def test_status_login_and_the_credential_chain(moto: Moto, aws_agent: AgentProcess) -> None:
    moto.client("secretsmanager").create_secret(Name="ml-team/mistral", SecretString="m" * 30)
    with aws_agent.client() as c:
        assert c.get("mistral") == "m" * 30
        [status] = c.remote_status()
    assert status["kind"] == "aws-secrets-manager" and status["auth"] == "credential-chain"
    assert status["logged_in"] and status["reachable"] and status["urls"] == [moto.url]
    shown = aws_agent.cli("remote", "status")
    assert shown.returncode == 0 and "boto3's credential chain" in shown.stdout, shown.stdout
    login = aws_agent.cli("remote", "login", "team", input="anything\n")
    assert login.returncode != 0 and "takes no login" in login.stderr and "boto3's standard chain" in login.stderr
    text = aws_agent.log()
    key = aws_agent.env["AWS_SECRET_ACCESS_KEY"]
    assert key not in text and "m" * 30 not in text


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('kind = "aws-secrets-manager"\n', "'region' must be an AWS region"),
        ('kind = "aws-secrets-manager"\nregion = "us-east-1"\naws_secret_access_key = "x"\n', "unknown key"),
        ('kind = "aws-secrets-manager"\nregion = "us-east-1"\nurl = "https://x"\n', "unknown key 'url'"),
        ('kind = "aws-secrets-manager"\nregion = "us-east-1"\nendpoint_url = "http://sm.example.com"\n', "loopback"),
        ('kind = "azure-key-vault"\n', "'kind' must be one of"),
    ],
)
def test_a_bad_aws_table_is_one_line_at_start(table: str, message: str) -> None:
    home = short_tmpdir()
    config = home / "config.toml"
    config.write_text("[remote.team]\n" + table)
    a = AgentProcess(home=home, env={"CREDENTIAL_AGENT_CONFIG": str(config)})
    try:
        done = a.cli("start")
        assert done.returncode != 0 and message in done.stderr, done.stderr
        assert "[remote.team]" in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    finally:
        a.cleanup()


def _loads_boto3(config: Path, tmp: Path) -> bool:
    """Whether an agent with ``config`` loads boto3 by the time it has listed and reported status."""
    code = (
        "import sys\n"
        "import client\n"
        "assert 'boto3' not in sys.modules and 'botocore' not in sys.modules, 'import client loaded boto3'\n"
        "import tomllib\n"
        "from agent import config, handlers, remotes, state\n"
        "from pathlib import Path\n"
        "table = tomllib.loads(Path(sys.argv[2]).read_text()).get('remote')\n"
        "a = state.Agent(config.Options(socket=Path(sys.argv[1]) / 's', vault=Path(sys.argv[1]) / 'v.sqlite3',\n"
        "                               remotes=remotes.parse(table, sys.argv[2])))\n"
        "d = handlers.make_dispatch(a)\n"
        "from client import protocol\n"
        "d(protocol.Request('list', {}), None)\n"
        "d(protocol.Request('remote_status', {}), None)\n"
        "print('boto3' in sys.modules or 'botocore' in sys.modules)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("CREDENTIAL_AGENT_")}
    env["CREDENTIAL_AGENT_CONFIG"] = str(config)
    done = subprocess.run([sys.executable, "-c", code, str(tmp), str(config)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1] == "True"


def test_boto3_only_for_an_aws_remote_and_only_in_one_module(tmp_path: Path) -> None:
    none, bao, aws = tmp_path / "none.toml", tmp_path / "bao.toml", tmp_path / "aws.toml"
    none.write_text("")
    bao.write_text('[remote.team]\nurl = "http://127.0.0.1:1"\n')
    aws.write_text(aws_config("team", "http://127.0.0.1:1"))
    assert not _loads_boto3(none, tmp_path)
    assert not _loads_boto3(bao, tmp_path)  # an OpenBao remote only: no boto3 either
    assert not _loads_boto3(aws, tmp_path)  # an AWS remote: not before its first call
    importers = sorted(
        str(p.relative_to(ROOT))
        for d in ("agent", "client")
        for p in (ROOT / d).rglob("*.py")
        if any(line.strip().startswith(("import boto3", "from boto3", "import botocore", "from botocore"))
               for line in p.read_text().splitlines())
    )
    assert importers == ["agent/remotes/aws.py"]



def test_a_listing_of_more_than_one_page(moto: Moto) -> None:
    """ListSecrets pages at 100: every page is read (a part of a listing would drop the rest)."""
    sm = moto.client("secretsmanager")
    for i in range(130):
        sm.create_secret(Name=f"paged/tool{i:03}", SecretString=f"k{i:03}-" + "p" * 20)
    a = start_aws_agent(moto.url, moto.member(), prefix="paged", refresh=3600)
    try:
        with a.client() as c:
            [status] = c.remote_sync("team")
            assert status["upstream_secrets"] == 130, status
            assert c.get("tool129") == "k129-" + "p" * 20
    finally:
        a.cleanup()


def test_a_writer_between_the_check_and_the_write_keeps_its_version(moto: Moto) -> None:
    """Secrets Manager has no check-and-set: another writer that comes in between the agent's
    check of AWSCURRENT and its PutSecretValue (made to, on the wire, by the relay) keeps its
    version current; the agent's write is a Conflict, and the agent then serves the other's."""
    sm = moto.client("secretsmanager")
    sm.create_secret(Name="ml-team/racing", SecretString="r1-" + "x" * 20)
    relay = Relay(moto.url)
    a = start_aws_agent(relay.url, moto.member(), refresh=3600)
    try:
        with a.client() as c:
            assert c.get("racing") == "r1-" + "x" * 20
            fired: list[bytes] = []

            def other_writer(data: bytes) -> None:
                if b"secretsmanager.PutSecretValue" in data and not fired:
                    fired.append(data)
                    sm.put_secret_value(SecretId="ml-team/racing", SecretString="other-" + "y" * 20)

            relay.before = other_writer
            with pytest.raises(errors.Conflict, match="changed upstream"):
                c.store("racing", "mine-" + "z" * 20, remote="team")
            assert fired  # the other writer did come in between
            assert secret(moto, "racing") == "other-" + "y" * 20
            assert c.get("racing") == "other-" + "y" * 20
    finally:
        relay.cut()
        a.cleanup()
