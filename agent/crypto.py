"""All cryptography of the agent: Fernet tokens, the row binding, the scrypt key wrap,
and the sealing of backup files (``agent.backup`` holds their format).

Rules of this module:
- it is the only module that imports ``cryptography``; its exceptions are
  translated here (``InvalidToken`` -> ``IntegrityError`` or ``BadPassphrase``);
- a stored value or metadata is a Fernet token whose plaintext is bound to its row:
  ``msgpack([platform, credential_type, field, payload])``; a token moved to another
  row or field, or edited, fails its check and is reported, never returned;
- ``encrypt``/``decrypt`` tokens (the original ``SecureStorage`` API, served by the
  agent) are made under the vault's data key, itself sealed under the master key, and
  bound to the purpose ``secure-storage`` (see ``encrypt_data``);
- a backup file's payload is sealed with AES-256-GCM under a key scrypt derives from
  the backup's passphrase; a second key from the same derivation MACs the file's
  header, so a wrong passphrase is told apart from a damaged file;
- no key or plaintext appears in a repr or a message;
- ``cryptography`` is imported on first use (the first unlock or ``init``): a
  locked or idle agent that never opened its vault does not carry its ~7 MiB.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import os
from typing import TYPE_CHECKING, Any, Final

import msgpack

from client import errors

if TYPE_CHECKING:
    from cryptography.fernet import Fernet

__all__ = [
    "SecureStorage",
    "generate_key",
    "seal",
    "unseal",
    "DATA_KEY",
    "seal_data_key",
    "open_data_key",
    "reseal_data_key",
    "encrypt_data",
    "decrypt_data",
    "SEALED_META",
    "seal_meta",
    "unseal_meta",
    "KdfParams",
    "pack_kdf",
    "unpack_kdf",
    "wrap_key",
    "unwrap_key",
    "DEFAULT_KDF",
    "BACKUP_KDF",
    "MAX_KDF_MEMORY",
    "NONCE_SIZE",
    "MAC_SIZE",
    "kdf_memory",
    "BackupKeys",
    "backup_keys",
    "header_mac",
    "check_header_mac",
    "seal_backup",
    "open_backup",
]


class SecureStorage:
    """Fernet encryption under one master key (the original ``SecureStorage`` API)."""

    __slots__ = ("_fernet", "_key")

    def __init__(self, key: bytes) -> None:
        from cryptography.fernet import Fernet

        try:
            self._fernet = Fernet(key)
        except (ValueError, TypeError) as e:
            raise errors.BadRequest("not a Fernet key (32 url-safe base64-encoded bytes)") from e
        self._key = key

    def master_key(self) -> bytes:
        """The key itself, to wrap it under another key source (agent.state.masterkey); nothing else."""
        return self._key

    def __repr__(self) -> str:
        return "SecureStorage(<key hidden>)"

    def encrypt_bytes(self, data: bytes) -> bytes:
        return self._fernet.encrypt(data)

    def decrypt_bytes(self, token: bytes) -> bytes:
        from cryptography.fernet import InvalidToken

        try:
            return self._fernet.decrypt(token)
        except (InvalidToken, TypeError, ValueError) as e:
            raise errors.IntegrityError() from e

    def encrypt(self, data: str) -> bytes:
        return self.encrypt_bytes(data.encode("utf-8", "surrogatepass"))

    def decrypt(self, encrypted: bytes) -> str:
        return self.decrypt_bytes(encrypted).decode("utf-8", "surrogatepass")


def preload() -> None:
    """Import ``cryptography`` (~10 ms here, a first unlock's own share): in a thread, while
    the key that unlock needs is still on its way (``LockState.warm``). The same import, in
    the same order, as every use here makes, so the two never meet halfway."""
    from cryptography.fernet import Fernet  # noqa: F401


def generate_key() -> bytes:
    from cryptography.fernet import Fernet

    return Fernet.generate_key()


def seal(storage: SecureStorage, platform: str, ctype: str, field: str, payload: Any) -> bytes:
    """A token of ``payload`` that opens only as ``field`` of the row ``platform``/``ctype``."""
    plain = msgpack.packb([platform, ctype, field, payload], use_bin_type=True)
    return storage.encrypt_bytes(plain)


def unseal(storage: SecureStorage, platform: str, ctype: str, field: str, token: bytes) -> Any:
    plain = storage.decrypt_bytes(token)
    try:
        p, t, f, payload = msgpack.unpackb(plain, raw=False)
    except (ValueError, TypeError, msgpack.UnpackException):
        raise errors.IntegrityError() from None
    if (p, t, f) != (platform, ctype, field):
        # a valid token from another row or field: someone swapped ciphertexts
        raise errors.IntegrityError(
            f"the stored {field} of {platform}/{ctype} belongs to another entry (swapped); it was not returned"
        )
    return payload


# The binding of SecureStorage tokens and of the data key they are made under. A vault
# row is bound to a platform name, which is never empty, and the key check to
# "key-check": no token of one kind opens as another.
_DATA = ("", "", "secure-storage")
_DATA_KEY = ("", "", "data-key")
# the vault meta entry that holds the sealed data key
DATA_KEY: Final = "data_key"


def seal_data_key(master: SecureStorage, key: bytes) -> bytes:
    """The data key as the vault keeps it: sealed under the master key."""
    return seal(master, *_DATA_KEY, key)


def _data_key(master: SecureStorage, sealed: bytes) -> bytes:
    try:
        key: bytes = unseal(master, *_DATA_KEY, sealed)
    except errors.IntegrityError:
        raise errors.IntegrityError(
            "the vault's data key (for encrypt/decrypt) failed its integrity check; nothing was decrypted"
        ) from None
    return key


def open_data_key(master: SecureStorage, sealed: bytes) -> SecureStorage:
    return SecureStorage(_data_key(master, sealed))


def reseal_data_key(old: SecureStorage, new: SecureStorage, sealed: bytes) -> bytes:
    """The sealed data key, moved from the master key ``old`` to ``new`` (a rotation)."""
    return seal_data_key(new, _data_key(old, sealed))


def encrypt_data(storage: SecureStorage, data: str) -> bytes:
    """A ``SecureStorage`` token of ``data``: a Fernet token under the data key, whose
    plaintext is bound to the purpose ``secure-storage``, so it can never be taken for
    a vault row (or a row for it), even under the same key."""
    return seal(storage, *_DATA, data)


def decrypt_data(storage: SecureStorage, token: bytes) -> str:
    try:
        data = unseal(storage, *_DATA, token)
    except errors.IntegrityError:
        raise errors.InvalidToken() from None
    if not isinstance(data, str):
        raise errors.InvalidToken()
    return data


# Vault meta named so holds a value sealed under the master key (a team vault's token):
# re-sealed with the rows by a rotation, bound to its name. No credential row can take
# such a name (a platform name has no "/").
SEALED_META: Final = "sealed/"


def seal_meta(storage: SecureStorage, name: str, payload: str) -> bytes:
    """The vault meta entry ``name`` (under ``SEALED_META``): ``payload`` sealed, bound to its name."""
    return seal(storage, "", "meta", name, payload)


def unseal_meta(storage: SecureStorage, name: str, token: bytes) -> str:
    payload = unseal(storage, "", "meta", name, token)
    if not isinstance(payload, str):
        raise errors.IntegrityError(f"the sealed meta {name} is not text")
    return payload


@dataclasses.dataclass(frozen=True)
class KdfParams:
    """scrypt parameters, stored beside the wrapped key so they can grow later."""

    salt: bytes
    n: int
    r: int
    p: int


# 2**17 x 8 x 128 B = 128 MiB per try, the OWASP scrypt recommendation: 0.4-0.5 s on an
# idle core of the 2-core development VM, 0.7-0.8 s while both cores are busy.
# Stored per vault, so a later default only affects new vaults.
DEFAULT_KDF: Final = (2**17, 8, 1)


def pack_kdf(params: KdfParams) -> bytes:
    """The parameters as the vault keeps them beside a wrapped key."""
    packed: bytes = msgpack.packb([params.salt, params.n, params.r, params.p])
    return packed


def unpack_kdf(raw: bytes) -> KdfParams:
    try:
        salt, n, r, p = msgpack.unpackb(raw)
    except (ValueError, TypeError, msgpack.UnpackException):
        raise errors.IntegrityError("the stored key-derivation parameters are damaged") from None
    return KdfParams(salt, n, r, p)


def _scrypt(passphrase: str, params: KdfParams, length: int) -> bytes:
    # hashlib's scrypt (OpenSSL, RFC 7914, same output as cryptography's) releases the
    # GIL; cryptography's holds it for the whole derivation (DEFAULT_KDF's time),
    # which would stall every other client of the agent while someone types a passphrase.
    return hashlib.scrypt(
        passphrase.encode("utf-8", "surrogatepass"),
        salt=params.salt,
        n=params.n,
        r=params.r,
        p=params.p,
        maxmem=2 * kdf_memory(params) + 1024 * 1024,  # OpenSSL counts more than V alone
        dklen=length,
    )


def kdf_memory(params: KdfParams) -> int:
    """The memory one derivation under ``params`` fills: scrypt's V, 128 x r x n bytes."""
    return 128 * params.r * params.n


def _derive(passphrase: str, params: KdfParams) -> Fernet:
    from cryptography.fernet import Fernet

    return Fernet(base64.urlsafe_b64encode(_scrypt(passphrase, params, 32)))


def wrap_key(master_key: bytes, passphrase: str, cost: tuple[int, int, int] = DEFAULT_KDF) -> tuple[KdfParams, bytes]:
    """Encrypt the master key under a key derived from ``passphrase``."""
    if not passphrase:
        raise errors.BadRequest("the passphrase is empty")
    params = KdfParams(os.urandom(16), *cost)
    return params, _derive(passphrase, params).encrypt(master_key)


def unwrap_key(wrapped: bytes, passphrase: str, params: KdfParams) -> bytes:
    from cryptography.fernet import InvalidToken

    try:
        return _derive(passphrase, params).decrypt(wrapped)
    except InvalidToken:
        raise errors.BadPassphrase() from None


# --- backup files ---------------------------------------------------------------------
# 2**18 x 8 x 128 B = 256 MiB per try: age's default for passphrase-encrypted files
# (work factor 18), twice the vault's DEFAULT_KDF because a backup is made to leave the
# machine and meet offline guessing on the attacker's hardware. 0.8 s a guess on one
# core of the 2-core development VM, 1.9x the vault's (benchmarks/kdf_guess_rate.py);
# a 24 GiB GPU holds fewer than 100 tries at once, so a guess costs memory, not just
# cycles. Stored in each file's header: a later default only affects new backups, and
# restore reads any file made before.
BACKUP_KDF: Final = (2**18, 8, 1)
# The most a backup file's header may make a restore hold for its scrypt: four times
# BACKUP_KDF, so the parameters can grow, while a crafted file cannot take the machine.
MAX_KDF_MEMORY: Final = 2**30
NONCE_SIZE: Final = 12  # AES-GCM's standard nonce; random, under a key used once
MAC_SIZE: Final = 32  # HMAC-SHA256


class BackupKeys:
    """The two keys one passphrase and salt give a backup: the payload's and the header's."""

    __slots__ = ("cipher", "mac")

    def __init__(self, cipher: bytes, mac: bytes) -> None:
        self.cipher = cipher
        self.mac = mac

    def __repr__(self) -> str:
        return "BackupKeys(<keys hidden>)"


def backup_keys(passphrase: str, params: KdfParams) -> BackupKeys:
    """Derive a backup's keys (64 bytes of scrypt, split); the slow step, ``params``' cost."""
    if not passphrase:
        raise errors.BadRequest("the passphrase is empty")
    raw = _scrypt(passphrase, params, 64)
    return BackupKeys(raw[:32], raw[32:])


def header_mac(keys: BackupKeys, header: bytes) -> bytes:
    return hmac.new(keys.mac, header, hashlib.sha256).digest()


def check_header_mac(keys: BackupKeys, header: bytes, mac: bytes) -> None:
    """``BadPassphrase`` unless ``mac`` is the header's under these keys: the passphrase
    is wrong, or someone changed the header (the salt, the parameters)."""
    if not hmac.compare_digest(header_mac(keys, header), mac):
        raise errors.BadPassphrase("wrong passphrase for this backup (or its header was changed)")


def seal_backup(keys: BackupKeys, nonce: bytes, payload: bytes, header: bytes) -> bytes:
    """``payload`` encrypted and authenticated with ``header`` as associated data."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    return AESGCM(keys.cipher).encrypt(nonce, payload, header)


def open_backup(keys: BackupKeys, nonce: bytes, sealed: bytes, header: bytes) -> bytes:
    """The payload ``seal_backup`` sealed; ``IntegrityError`` if a byte of it or of the
    header changed, or some are missing."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    try:
        return AESGCM(keys.cipher).decrypt(nonce, sealed, header)
    except (InvalidTag, ValueError) as e:
        raise errors.IntegrityError("the backup is damaged or truncated: its contents fail their check") from e
