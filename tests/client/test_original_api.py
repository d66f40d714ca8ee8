"""The original API, unchanged but for its import line, against a running agent."""

from __future__ import annotations

import logging

import pytest

from support import AgentProcess


@pytest.fixture
def service(unlocked_agent: AgentProcess):  # type: ignore[no-untyped-def]
    from client import CredentialService

    return CredentialService(path=unlocked_agent.socket)


def test_original_readme_usage(service) -> None:  # type: ignore[no-untyped-def]
    assert service.store_credential("runpod", "rp_" + "x" * 30, metadata={"team": "ml"}) is True
    assert service.get_credential("runpod") == "rp_" + "x" * 30
    assert service.update_credential("runpod", "rp_" + "y" * 30) is True
    assert service.get_credential("runpod") == "rp_" + "y" * 30
    assert service.list_platforms() == ["runpod"]
    meta = service.get_credential_metadata("runpod")
    assert meta["metadata"] == {"team": "ml"} and meta["platform"] == "runpod"
    assert meta["created_at"] and meta["updated_at"]
    assert "rp_" not in repr(meta)
    assert service.validate_credential("huggingface", "hf_abc") is True
    assert service.validate_credential("huggingface", "abc") is False
    assert service.validate_credential("bad name", "abc") is False
    assert service.delete_credential("runpod") is True
    assert service.get_credential("runpod") is None
    assert service.list_platforms() == []


def test_failures_return_false_or_none_and_log_without_the_value(service, caplog) -> None:  # type: ignore[no-untyped-def]
    secret = "SECRET-not-an-hf-token"
    with caplog.at_level(logging.DEBUG):
        assert service.update_credential("nothere", secret) is False
        assert service.delete_credential("nothere") is False
        assert service.get_credential("nothere") is None
        assert service.get_credential_metadata("nothere") is None
        assert service.store_credential("bad name", secret) is False
        assert service.store_credential("runpod", "") is False
        assert service.store_credential("x" * 65, secret) is False
        assert service.store_credential("runpod", secret, metadata={"deep": [[[[[[[[["x"]]]]]]]]]}) is False
    assert secret not in caplog.text
    assert "invalid platform name" in caplog.text and "empty" in caplog.text  # why, without the value
    assert service.list_platforms() == []


@pytest.mark.parametrize(("platform", "value"), [
    ("huggingface", "not-an-hf-token"),
    ("wandb", "too-short"),
    ("runpod", "short"),
    ("lambdalabs", "has spaces inside it"),
    ("huggingface", "-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n"),
    ("runpod", '{\n  "type": "service_account",\n  "private_key": "x"\n}'),
    ("myplatform", "tab\tand \x01 control"),
])
def test_store_and_update_never_reject_a_format(service, platform: str, value: str) -> None:  # type: ignore[no-untyped-def]
    """As the original: the rules are ``validate_credential``'s, asked first; the store keeps what it is given."""
    assert service.validate_credential(platform, value) is False
    assert service.store_credential(platform, value) is True
    assert service.get_credential(platform) == value
    assert service.update_credential(platform, value + "2") is True
    assert service.get_credential(platform) == value + "2"
    assert service.update_credential(platform, "") is False
    assert service.get_credential(platform) == value + "2"


def test_metadata_keeps_todays_shape(service) -> None:  # type: ignore[no-untyped-def]
    """The user's dict under "metadata", exactly as given; type and timestamps beside it."""
    import datetime
    import time

    from client import Client

    user = {"team": "ml", "created_at": "the user's own key", "nested": {"a": [1, 2]}}
    assert service.store_credential("runpod", "r" * 30, metadata=user) is True
    meta = service.get_credential_metadata("runpod")
    assert set(meta) == {"platform", "credential_type", "created_at", "updated_at", "expires_at", "metadata"}
    assert meta["metadata"] == user
    assert (meta["platform"], meta["credential_type"], meta["expires_at"]) == ("runpod", "api-key", None)
    created = datetime.datetime.fromisoformat(meta["created_at"])
    assert created.tzinfo is not None and abs(created.timestamp() - time.time()) < 3600
    assert datetime.datetime.fromisoformat(meta["updated_at"]) >= created

    assert service.update_credential("runpod", "s" * 30) is True  # metadata None: kept
    again = service.get_credential_metadata("runpod")
    assert again["metadata"] == user and again["created_at"] == meta["created_at"]
    assert again["updated_at"] >= meta["updated_at"]

    assert service.store_credential("bare", "b" * 30) is True
    assert service.get_credential_metadata("bare")["metadata"] == {}
    with Client(service.client.path, autostart=False) as c:
        c.store("dated", "d" * 30, expires_at=2_000_000_000)
        c.store("runpod", "t" * 30, "token", {"scope": "read"})
    assert service.get_credential_metadata("dated")["expires_at"] == "2033-05-18T03:33:20+00:00"
    typed = service.get_credential_metadata("runpod", "token")
    assert (typed["credential_type"], typed["metadata"]) == ("token", {"scope": "read"})
    assert "r" * 30 not in repr(meta) and "s" * 30 not in repr(again)


def test_several_credential_types_per_platform(service) -> None:  # type: ignore[no-untyped-def]
    assert service.store_credential("lambdalabs", "l" * 24) is True
    assert service.store_credential("lambdalabs", "ssh-ed25519_AAAA", credential_type="ssh-key") is True
    assert service.get_credential("lambdalabs", "ssh-key") == "ssh-ed25519_AAAA"
    assert service.list_platforms() == ["lambdalabs"]
    assert service.delete_credential("lambdalabs", "ssh-key") is True
    assert service.get_credential("lambdalabs") == "l" * 24


def test_no_agent_returns_none_not_an_exception(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from client import CredentialService

    service = CredentialService(path=tmp_path / "none.sock")
    assert service.get_credential("x") is None
    assert service.store_credential("x", "y") is False
    assert service.list_platforms() == []
