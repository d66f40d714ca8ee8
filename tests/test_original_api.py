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
        assert service.store_credential("huggingface", secret) is False
        assert service.update_credential("nothere", "v" * 30) is False
        assert service.delete_credential("nothere") is False
        assert service.get_credential("nothere") is None
        assert service.get_credential_metadata("nothere") is None
        assert service.store_credential("bad name", secret) is False
    assert secret not in caplog.text
    assert "hf_" in caplog.text  # the failed rule is named


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
