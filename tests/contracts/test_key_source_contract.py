"""The contract every key source keeps (agent.keys), as keyring's BackendBasicTests.

Each source subclasses ``KeySourceContract`` in a few lines. The sources run in this
process against a real vault (agent.stores.sqlite) and, for the OS keystore, a real
Secret Service (gnome-keyring on a private D-Bus bus); nothing is mocked.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import os
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, ClassVar

import msgpack
import pytest

from agent import crypto, keys
from agent.keys import keyring as keystore
from agent.keys import keystore as keystore_calls
from agent.keys import passphrase
from agent.keys.base import KeySource
from agent.stores import VaultMeta
from agent.stores.sqlite import SqliteStore
from client import errors, protocol
from support import SecretService

PASSPHRASE = "correct horse battery staple"


def test_the_agent_implements_exactly_the_protocols_key_sources() -> None:
    assert tuple(keys.implementations()) == protocol.KEY_SOURCES


class KeySourceContract:
    """Subclasses set ``name`` and may give a ``passphrase``/``new_passphrase``."""

    name: ClassVar[str]
    passphrase: ClassVar[str | None] = None
    new_passphrase: ClassVar[str | None] = None

    @pytest.fixture
    async def vault(self, tmp_path: Path) -> AsyncIterator[tuple[SqliteStore, VaultMeta]]:
        store = SqliteStore(tmp_path / "vault.sqlite3")
        pool = concurrent.futures.ThreadPoolExecutor(1)

        async def run(fn: Any, *args: Any) -> Any:
            return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)

        yield store, VaultMeta(store, run)
        pool.shutdown(wait=True)
        store.close()

    def make(self, meta: VaultMeta) -> KeySource:
        return keys.source_for(self.name, meta, 10.0)

    async def created(self, meta: VaultMeta) -> tuple[KeySource, bytes]:
        """A source with a new vault's key in its home, the meta saved as init saves it."""
        source = self.make(meta)
        key, vault_id = crypto.generate_key(), os.urandom(8).hex()
        made, _backend = await source.create(key, vault_id, self.passphrase)
        await meta.save({"vault_id": vault_id.encode(), "key_source": source.name.encode(), **made})
        return source, key

    @staticmethod
    def commit(store: SqliteStore, meta: VaultMeta, changes: dict[str, bytes | None]) -> None:
        """What a rotation's one transaction does with ``rewrap``'s meta."""
        store.replace_all([], {k: v for k, v in changes.items() if v is not None},
                          drop_meta=tuple(k for k, v in changes.items() if v is None))
        meta.committed(changes)

    async def test_its_name_is_in_the_protocol(self, vault: tuple[SqliteStore, VaultMeta]) -> None:
        source = self.make(vault[1])
        assert source.name == self.name and source.name in protocol.KEY_SOURCES

    async def test_open_returns_the_key_create_gave_a_home(self, vault: tuple[SqliteStore, VaultMeta]) -> None:
        store, meta = vault
        _, key = await self.created(meta)
        # a restarted agent: a new source that knows only what the vault holds
        fresh = self.make(VaultMeta(store, meta._run))
        assert await fresh.open(self.passphrase) == key

    async def test_the_key_is_never_in_the_vault_in_the_clear(self, vault: tuple[SqliteStore, VaultMeta]) -> None:
        store, meta = vault
        _, key = await self.created(meta)
        raw = base64.urlsafe_b64decode(key)
        for value in store.meta().values():
            assert key not in value and raw not in value

    async def test_rewrap_gives_the_new_key_its_home(self, vault: tuple[SqliteStore, VaultMeta]) -> None:
        store, meta = vault
        source, old = await self.created(meta)
        new = crypto.generate_key()
        self.commit(store, meta, await source.rewrap(new, self.new_passphrase or self.passphrase))
        await source.tidy()
        fresh = self.make(VaultMeta(store, meta._run))
        assert await fresh.open(self.new_passphrase or self.passphrase) == new != old

    async def test_a_rewrap_that_is_never_committed_leaves_the_old_key(
        self, vault: tuple[SqliteStore, VaultMeta]
    ) -> None:
        store, meta = vault
        source, old = await self.created(meta)
        await source.rewrap(crypto.generate_key(), self.new_passphrase or self.passphrase)  # then a crash
        fresh = self.make(VaultMeta(store, meta._run))
        await fresh.tidy()  # what the next unlock does
        assert await fresh.open(self.passphrase) == old
        assert not {"pending_key_account", "stale_key_account"} & set(store.meta())

    async def test_retire_leaves_nothing_that_opens(self, vault: tuple[SqliteStore, VaultMeta]) -> None:
        store, meta = vault
        source, _ = await self.created(meta)
        await source.retire()
        assert set(store.meta()) == {"vault_id", "key_source"}
        with pytest.raises((errors.IntegrityError, errors.KeystoreUnavailable)):
            await self.make(VaultMeta(store, meta._run)).open(self.passphrase)

    async def test_forget_then_open_again(self, vault: tuple[SqliteStore, VaultMeta]) -> None:
        source, key = await self.created(vault[1])
        assert await source.open(self.passphrase) == key
        source.forget()
        assert await source.open(self.passphrase) == key

    async def test_repr_shows_no_key(self, vault: tuple[SqliteStore, VaultMeta]) -> None:
        source, key = await self.created(vault[1])
        await source.open(self.passphrase)
        assert key.decode() not in repr(source) and (self.passphrase or "\0") not in repr(source)


class TestPassphraseSource(KeySourceContract):
    name = "passphrase"
    passphrase = PASSPHRASE
    new_passphrase = "a new passphrase for the new key"

    async def test_a_wrong_passphrase_is_refused_with_a_growing_delay(
        self, vault: tuple[SqliteStore, VaultMeta]
    ) -> None:
        source, _ = await self.created(vault[1])
        for failures in (1, 2):
            t0 = time.monotonic()
            with pytest.raises(errors.BadPassphrase):
                await source.open("wrong")
            assert time.monotonic() - t0 >= 0.1 * failures
        assert "failures=2" in repr(source)

    async def test_no_passphrase_says_how_to_unlock(self, vault: tuple[SqliteStore, VaultMeta]) -> None:
        source, _ = await self.created(vault[1])
        with pytest.raises(errors.BadPassphrase, match="agent unlock"):
            await source.open(None)

    async def test_a_failure_stamped_in_the_future_waits_no_longer_than_its_delay(
        self, vault: tuple[SqliteStore, VaultMeta]
    ) -> None:
        _, meta = vault
        _, key = await self.created(meta)
        await meta.save({passphrase.FAILURES: msgpack.packb([5, time.time() + 3600])})  # the clock moved back
        source = self.make(meta)
        assert isinstance(source, passphrase.PassphraseSource)
        assert source._next - time.monotonic() <= 0.5  # the 5th failure's delay, not an hour
        assert await source.open(self.passphrase) == key

    async def test_a_malformed_failure_count_is_ignored(self, vault: tuple[SqliteStore, VaultMeta]) -> None:
        _, meta = vault
        _, key = await self.created(meta)
        for junk in (msgpack.packb(["x", "y"]), msgpack.packb([-3, 0.0]), b"\xc1not msgpack"):
            await meta.save({passphrase.FAILURES: junk})
            source = self.make(meta)
            assert "failures=0" in repr(source)
            assert await source.open(self.passphrase) == key

    async def test_create_needs_a_passphrase(self, vault: tuple[SqliteStore, VaultMeta]) -> None:
        with pytest.raises(errors.BadRequest):
            await self.make(vault[1]).create(crypto.generate_key(), "00", "")


class TestKeyringSource(KeySourceContract):
    """On Linux, against gnome-keyring on a private bus (macOS Keychain and Windows
    Credential Manager are keyring's own backends and cannot run on this machine)."""

    name = "keyring"

    @pytest.fixture(autouse=True)
    def _real_secret_service(self, secret_service: SecretService, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
        import keyring
        import keyring.backends.SecretService

        for name, value in secret_service.env.items():  # the bus, and the backend as the agent chooses it
            monkeypatch.setenv(name, value)
        monkeypatch.setattr(keystore_calls, "_chosen", None)
        before = keyring.get_keyring()
        keyring.set_keyring(keyring.backends.SecretService.Keyring())  # for the checks made here directly
        yield
        keyring.set_keyring(before)

    @staticmethod
    def stored(account: str) -> str | None:
        import keyring

        return keyring.get_password(keystore.SERVICE, account)

    async def test_one_entry_holds_the_key(self, vault: tuple[SqliteStore, VaultMeta]) -> None:
        source, key = await self.created(vault[1])
        assert isinstance(source, keystore.KeyringSource)
        assert self.stored(source.account()) == key.decode()

    async def test_rotation_deletes_the_old_entry(self, vault: tuple[SqliteStore, VaultMeta]) -> None:
        store, meta = vault
        source, _ = await self.created(meta)
        assert isinstance(source, keystore.KeyringSource)
        old_account = source.account()
        self.commit(store, meta, await source.rewrap(crypto.generate_key(), None))
        await source.tidy()
        assert self.stored(old_account) is None
        assert source.account() != old_account and self.stored(source.account()) is not None

    async def test_a_missing_entry_says_so(self, vault: tuple[SqliteStore, VaultMeta]) -> None:
        import keyring

        source, _ = await self.created(vault[1])
        assert isinstance(source, keystore.KeyringSource)
        keyring.delete_password(keystore.SERVICE, source.account())
        with pytest.raises(errors.KeystoreUnavailable, match="missing from the OS keystore"):
            await source.open(None)


@pytest.mark.skipif(sys.platform not in ("win32", "darwin"),
                    reason="macOS Keychain and Windows Credential Manager: run in the macos and windows CI jobs only")
class TestOSKeystoreSource(TestKeyringSource):
    """The same suite against the keystore of macOS or Windows, through keyring's own backend."""

    @pytest.fixture(autouse=True)
    def _real_secret_service(self, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:  # type: ignore[override]
        import keyring
        import keyring.core

        name = ("keyring.backends.Windows.WinVaultKeyring" if sys.platform == "win32"
                else "keyring.backends.macOS.Keyring")
        monkeypatch.setenv("PYTHON_KEYRING_BACKEND", name)
        monkeypatch.setattr(keystore_calls, "_chosen", None)
        before = keyring.get_keyring()
        keyring.set_keyring(keyring.core.load_keyring(name))
        yield
        keyring.set_keyring(before)

    async def test_the_entry_fits_credential_manager(self, vault: tuple[SqliteStore, VaultMeta]) -> None:
        source, key = await self.created(vault[1])
        assert isinstance(source, keystore.KeyringSource)
        stored = self.stored(source.account())
        assert stored == key.decode() and len(stored) == 44
        assert len(stored.encode("utf-16-le")) <= keystore.CRED_MAX_CREDENTIAL_BLOB_SIZE
