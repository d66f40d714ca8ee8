"""The kinds of remote: options by kind (OpenBao stays the default), one registry, and AWS
Secrets Manager's name and value mapping (pure functions, no server)."""

from __future__ import annotations

import pytest

from agent.remotes import KIND_KEYS, parse
from agent.remotes.kinds import KINDS
from client.config import ConfigError


def test_every_kind_has_its_options_and_its_module() -> None:
    assert set(KIND_KEYS) == set(KINDS)


def test_a_table_without_kind_is_openbao() -> None:
    [r] = parse({"team": {"url": "https://bao:8200"}}, "config.toml")
    assert r.kind == "openbao" and r.urls == ("https://bao:8200",) and r.poll == 30


def test_an_aws_table() -> None:
    table = {"kind": "aws-secrets-manager", "region": "eu-west-1", "endpoint_url": "http://127.0.0.1:5000/"}
    [r] = parse({"team": {**table, "prefix": "ml-team", "poll": "10s"}}, "config.toml")
    assert (r.kind, r.region, r.urls, r.prefix, r.poll) == (
        "aws-secrets-manager", "eu-west-1", ("http://127.0.0.1:5000",), "ml-team", 10.0
    )


@pytest.mark.parametrize("table", [
    {"kind": "aws-secrets-manager", "region": "eu-west-1", "aws_access_key_id": "AKIA"},
    {"kind": "aws-secrets-manager", "region": "eu-west-1", "mount": "secret"},
    {"kind": "aws-secrets-manager", "region": "Ireland"},
    {"kind": "openbao", "url": "https://bao:8200", "region": "eu-west-1"},
])
def test_what_a_kind_does_not_take_is_refused(table: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match=r"\[remote.team\]"):
        parse({"team": table}, "config.toml")


def test_aws_values_a_string_is_one_credential_a_json_object_one_per_key() -> None:
    aws = pytest.importorskip("agent.remotes.aws")
    assert aws.values_of("sk-abc") == {"api-key": "sk-abc"}
    assert aws.values_of('{"api-key": "a", "org-id": "b"}') == {"api-key": "a", "org-id": "b"}
    assert aws.values_of('{"api-key": 1}') == {}  # not all strings: nothing served
    assert aws.values_of(None) == {}  # a binary secret
    assert aws.values_of("{not json") == {"api-key": "{not json"}
    assert aws.string_of({"api-key": "a"}) == "a"
    assert aws.string_of({"api-key": "a", "org-id": "b"}) == '{"api-key": "a", "org-id": "b"}'


def test_aws_variables_reach_a_new_agent_only_when_asked_for() -> None:
    """boto3's chain reads AWS_*: `agent start` and autostart hand them on (``aws=True``); the
    agent keeps them only when its config names an AWS remote (agent.daemon), else the
    default clean environment, without them, is what it keeps."""
    from client import spawn

    environ = {"HOME": "/home/u", "AWS_PROFILE": "ml", "AWS_SECRET_ACCESS_KEY": "s", "OPENAI_API_KEY": "sk"}
    assert spawn.clean_env(environ) == {"HOME": "/home/u"}
    assert spawn.clean_env(environ, aws=True) == {"HOME": "/home/u", "AWS_PROFILE": "ml", "AWS_SECRET_ACCESS_KEY": "s"}
