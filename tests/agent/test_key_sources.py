"""Both key sources end to end; the keyring one against a real Secret Service.

``KeySourceContract`` is the shared contract (as keyring's BackendBasicTests); each
key source subclasses it with the fixture that makes its agent.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from client import Client, errors
from support import PASSPHRASE, ROOT, AgentProcess, SecretService, vault_store

HF = "hf_" + "Q" * 34


def vault_id(a: AgentProcess) -> str:
    with vault_store(a.home) as store:
        return store.meta()["vault_id"].decode()


def keystore_get(ss: SecretService, account: str) -> str | None:
    code = f"import keyring; v = keyring.get_password('credential-agent', {account!r}); print(v or '')"
    env = {k: v for k, v in __import__("os").environ.items()}
    env.update(ss.env)
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip() or None


def keystore_set(ss: SecretService, account: str, value: str) -> None:
    code = f"import keyring; keyring.set_password('credential-agent', {account!r}, {value!r})"
    env = dict(__import__("os").environ, **ss.env)
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=30)


class KeySourceContract:
    source = ""

    @pytest.fixture
    def vault_agent(self) -> Iterator[AgentProcess]:
        raise NotImplementedError

    def unlock(self, c: Client) -> None:
        raise NotImplementedError

    def test_status_names_the_source(self, vault_agent: AgentProcess) -> None:
        with vault_agent.client() as c:
            st = c.status()
        assert st["key_source"] == self.source and st["initialized"] and not st["locked"]

    def test_store_lock_unlock_get(self, vault_agent: AgentProcess) -> None:
        with vault_agent.client() as c:
            c.store("huggingface", HF, metadata={"team": "ml"})
            c.lock()
            with pytest.raises(errors.Locked):
                c.get("huggingface")  # an explicit lock holds until an explicit unlock
            self.unlock(c)
            assert c.get("huggingface") == HF
            assert c.metadata("huggingface")["metadata"] == {"team": "ml"}

    def test_restart_keeps_everything(self, vault_agent: AgentProcess) -> None:
        with vault_agent.client() as c:
            c.store("runpod", "r" * 25)
        vault_agent.stop()
        vault_agent.start()
        with vault_agent.client() as c:
            assert c.status()["locked"]
            self.unlock(c)
            assert c.get("runpod") == "r" * 25


class TestPassphraseSource(KeySourceContract):
    source = "passphrase"

    @pytest.fixture
    def vault_agent(self, unlocked_agent: AgentProcess) -> AgentProcess:
        return unlocked_agent

    def unlock(self, c: Client) -> None:
        c.unlock(PASSPHRASE)


class TestKeyringSource(KeySourceContract):
    source = "keyring"

    @pytest.fixture
    def vault_agent(self, keyring_agent: AgentProcess) -> AgentProcess:
        done = keyring_agent.cli("init")
        assert done.returncode == 0, done.stderr
        return keyring_agent

    def unlock(self, c: Client) -> None:
        c.unlock()

    def test_init_chose_the_keystore_and_said_so(self, vault_agent: AgentProcess) -> None:
        st = vault_agent.cli("status", "--json")
        assert '"key_source": "keyring"' in st.stdout

    def test_master_key_is_one_entry_in_the_secret_service(self, vault_agent: AgentProcess,
                                                           secret_service: SecretService) -> None:
        key = keystore_get(secret_service, f"master-key-{vault_id(vault_agent)}")
        assert key is not None and len(key) == 44  # a Fernet key, and nothing else
        with vault_agent.client() as c:
            c.store("wandb", "w" * 40)
        assert keystore_get(secret_service, "wandb") is None  # values never go to the keystore

    def test_auto_unlock_on_first_use_after_restart(self, vault_agent: AgentProcess) -> None:
        with vault_agent.client() as c:
            c.store("huggingface", HF)
        vault_agent.stop()
        vault_agent.start()
        with vault_agent.client() as c:
            assert c.status()["locked"]
            t = time.monotonic()
            assert c.get("huggingface") == HF  # gpg-agent style: unlocked by the first request
            elapsed = time.monotonic() - t
            assert not c.status()["locked"]
        print(f"\nkeystore unlock + first get: {elapsed * 1000:.1f} ms")

    def test_the_vault_names_its_backend_and_an_unlock_loads_that_one_alone(
            self, vault_agent: AgentProcess, secret_service: SecretService, tmp_path: Path) -> None:
        with vault_store(vault_agent.home) as store:
            assert store.meta()["key_backend"] == b"keyring.backends.SecretService.Keyring"
        # with no backend named (no PYTHON_KEYRING_BACKEND, no keyringrc.cfg), keyring's own search
        # imports every installed backend (kwallet among them) and asks each its priority
        probe = ("import asyncio, sys\nfrom agent.keys import keyring as k\n"
                 "key = asyncio.run(k.get_key(sys.argv[1], 10.0, sys.argv[2] or None))\n"
                 "print(len(key or b''), 'keyring.backends.kwallet' in sys.modules)")
        env = {**os.environ, **secret_service.env, "PYTHON_KEYRING_BACKEND": "", "XDG_CONFIG_HOME": str(tmp_path)}
        account = f"master-key-{vault_id(vault_agent)}"
        said = {}
        for known in ("keyring.backends.SecretService.Keyring", ""):
            done = subprocess.run([sys.executable, "-c", probe, account, known], env=env, capture_output=True,
                                  text=True, timeout=60, cwd=ROOT)
            assert done.returncode == 0, done.stderr
            said[known] = done.stdout.split()
        assert said["keyring.backends.SecretService.Keyring"] == ["44", "False"]  # the known backend alone
        assert said[""] == ["44", "True"]  # the search, as before
        # and the agent itself, with no backend named, unlocks on the first request
        with vault_agent.client() as c:
            c.store("runpod", "r" * 25)
        vault_agent.stop()
        vault_agent.env["PYTHON_KEYRING_BACKEND"] = ""
        vault_agent.start()
        with vault_agent.client() as c:
            assert c.get("runpod") == "r" * 25

    def test_a_rotation_names_the_backend_of_a_vault_made_before_it_was_recorded(
            self, vault_agent: AgentProcess) -> None:
        vault_agent.stop()
        with vault_store(vault_agent.home) as store:
            store.delete_meta("key_backend")  # as a vault made by an earlier version
        vault_agent.start()
        done = vault_agent.cli("rotate-key")
        assert done.returncode == 0, done.stderr
        with vault_store(vault_agent.home) as store:
            assert store.meta()["key_backend"] == b"keyring.backends.SecretService.Keyring"

    def test_missing_keystore_entry_is_a_clear_error(self, vault_agent: AgentProcess,
                                                     secret_service: SecretService) -> None:
        account = f"master-key-{vault_id(vault_agent)}"
        saved = keystore_get(secret_service, account)
        assert saved is not None
        code = f"import keyring; keyring.delete_password('credential-agent', {account!r})"
        subprocess.run([sys.executable, "-c", code], env=dict(__import__("os").environ, **secret_service.env),
                       check=True, timeout=30)
        try:
            vault_agent.stop()
            vault_agent.start()
            with vault_agent.client() as c:
                with pytest.raises(errors.KeystoreUnavailable) as info:
                    c.get("anything")
                assert "missing from the OS keystore" in info.value.message
        finally:
            keystore_set(secret_service, account, saved)

    def test_wrong_key_in_keystore_is_detected(self, vault_agent: AgentProcess,
                                               secret_service: SecretService) -> None:
        account = f"master-key-{vault_id(vault_agent)}"
        with vault_agent.client() as c:
            c.store("runpod", "r" * 25)
        keystore_set(secret_service, account, "A" * 43 + "=")  # a valid Fernet key, not ours
        vault_agent.stop()
        vault_agent.start()
        with vault_agent.client() as c:
            with pytest.raises(errors.IntegrityError) as info:
                c.get("runpod")
            assert "does not open this vault" in info.value.message


def test_an_agent_without_the_session_bus_says_so_and_how_to_fix_it() -> None:
    """Started outside the desktop session (no DBUS_SESSION_BUS_ADDRESS, no $XDG_RUNTIME_DIR/bus)."""
    a = AgentProcess(env={"PYTHON_KEYRING_BACKEND": "keyring.backends.SecretService.Keyring"}).start()
    try:
        done = a.cli("init", "--key-source", "keyring")
        assert done.returncode != 0
        assert "this agent has no session D-Bus" in done.stderr
        assert "`agent start` in one of its terminals" in done.stderr and "--key-source passphrase" in done.stderr
    finally:
        a.cleanup()
