"""All cryptography of the agent: Fernet tokens and the scrypt key wrap.

Rules of this module:
- it is the only module that imports ``cryptography``; its exceptions are
  translated here (``InvalidToken`` -> ``IntegrityError`` or ``BadPassphrase``);
- no key or plaintext appears in a repr or a message.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import os
from typing import Final

from cryptography.fernet import Fernet, InvalidToken

from client import errors

__all__ = ["SecureStorage", "generate_key", "KdfParams", "wrap_key", "unwrap_key", "DEFAULT_KDF"]


class SecureStorage:
    """Fernet encryption under one master key (the original ``SecureStorage`` API)."""

    __slots__ = ("_fernet",)

    def __init__(self, key: bytes) -> None:
        try:
            self._fernet = Fernet(key)
        except (ValueError, TypeError) as e:
            raise errors.BadRequest("not a Fernet key (32 url-safe base64-encoded bytes)") from e

    def __repr__(self) -> str:
        return "SecureStorage(<key hidden>)"

    def encrypt_bytes(self, data: bytes) -> bytes:
        return self._fernet.encrypt(data)

    def decrypt_bytes(self, token: bytes) -> bytes:
        try:
            return self._fernet.decrypt(token)
        except (InvalidToken, TypeError, ValueError) as e:
            raise errors.IntegrityError() from e

    def encrypt(self, data: str) -> bytes:
        return self.encrypt_bytes(data.encode("utf-8", "surrogatepass"))

    def decrypt(self, encrypted: bytes) -> str:
        return self.decrypt_bytes(encrypted).decode("utf-8", "surrogatepass")


def generate_key() -> bytes:
    return Fernet.generate_key()


@dataclasses.dataclass(frozen=True)
class KdfParams:
    """scrypt parameters, stored beside the wrapped key so they can grow later."""

    salt: bytes
    n: int
    r: int
    p: int


# 2**17 x 8 x 128 B = 128 MiB and ~0.4 s per try here: the OWASP scrypt
# recommendation. Stored per vault, so a later default only affects new vaults.
DEFAULT_KDF: Final = (2**17, 8, 1)


def _derive(passphrase: str, params: KdfParams) -> Fernet:
    # hashlib's scrypt (OpenSSL, RFC 7914, same output as cryptography's) releases the
    # GIL; cryptography's holds it for the whole ~0.5 s, which would stall every other
    # client of the agent while someone types a passphrase.
    maxmem = 2 * 128 * params.r * params.n + 1024 * 1024
    raw = hashlib.scrypt(
        passphrase.encode("utf-8", "surrogatepass"),
        salt=params.salt, n=params.n, r=params.r, p=params.p, maxmem=maxmem, dklen=32,
    )
    return Fernet(base64.urlsafe_b64encode(raw))


def wrap_key(master_key: bytes, passphrase: str, cost: tuple[int, int, int] = DEFAULT_KDF) -> tuple[KdfParams, bytes]:
    """Encrypt the master key under a key derived from ``passphrase``."""
    if not passphrase:
        raise errors.BadRequest("the passphrase is empty")
    params = KdfParams(os.urandom(16), *cost)
    return params, _derive(passphrase, params).encrypt(master_key)


def unwrap_key(wrapped: bytes, passphrase: str, params: KdfParams) -> bytes:
    try:
        return _derive(passphrase, params).decrypt(wrapped)
    except InvalidToken:
        raise errors.BadPassphrase() from None
