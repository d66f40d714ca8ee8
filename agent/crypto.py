"""All cryptography of the agent: Fernet tokens, the row binding, the scrypt key wrap.

Rules of this module:
- it is the only module that imports ``cryptography``; its exceptions are
  translated here (``InvalidToken`` -> ``IntegrityError`` or ``BadPassphrase``);
- a stored value or metadata is a Fernet token whose plaintext is bound to its row:
  ``msgpack([platform, credential_type, field, payload])``; a token moved to another
  row or field, or edited, fails its check and is reported, never returned;
- ``encrypt``/``decrypt`` tokens (the original ``SecureStorage`` API, served by the
  agent) are made under the vault's data key, itself sealed under the master key, and
  bound to the purpose ``secure-storage`` (see ``encrypt_data``);
- no key or plaintext appears in a repr or a message;
- ``cryptography`` is imported on first use (the first unlock or ``init``): a
  locked or idle agent that never opened its vault does not carry its ~7 MiB.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
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


def _derive(passphrase: str, params: KdfParams) -> Fernet:
    from cryptography.fernet import Fernet

    # hashlib's scrypt (OpenSSL, RFC 7914, same output as cryptography's) releases the
    # GIL; cryptography's holds it for the whole derivation (DEFAULT_KDF's time),
    # which would stall every other client of the agent while someone types a passphrase.
    maxmem = 2 * 128 * params.r * params.n + 1024 * 1024
    raw = hashlib.scrypt(
        passphrase.encode("utf-8", "surrogatepass"),
        salt=params.salt,
        n=params.n,
        r=params.r,
        p=params.p,
        maxmem=maxmem,
        dklen=32,
    )
    return Fernet(base64.urlsafe_b64encode(raw))


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
