"""What a team vault's login leaves in the local vault's meta, sealed under the master key.

``sealed/remote-token/NAME`` holds the token; after an AppRole login,
``sealed/remote-approle/NAME`` holds its role and secret ids, after a JWT login
``sealed/remote-jwt/NAME`` its role and the JWT or the file it is read from, so the agent
can log in again by itself (``sealed/remote-cache/NAME``, the offline cache, is
``agent.remotes.offline``'s). No credential can take such a name, ``ls`` never shows it, and key
rotation re-seals it with the rows (``agent.state.resealing``).
"""

from __future__ import annotations

import json

from agent import crypto
from agent.crypto import SecureStorage
from agent.remotes import AppRole, Jwt
from client import errors

__all__ = [
    "token_meta",
    "approle_meta",
    "jwt_meta",
    "seal_token",
    "unseal_token",
    "seal_approle",
    "unseal_approle",
    "seal_jwt",
    "unseal_jwt",
]


def token_meta(name: str) -> str:
    return f"{crypto.SEALED_META}remote-token/{name}"


def approle_meta(name: str) -> str:
    return f"{crypto.SEALED_META}remote-approle/{name}"


def jwt_meta(name: str) -> str:
    return f"{crypto.SEALED_META}remote-jwt/{name}"


def seal_token(storage: SecureStorage, name: str, token: str) -> bytes:
    return crypto.seal_meta(storage, token_meta(name), token)


def unseal_token(storage: SecureStorage, name: str, sealed: bytes) -> str:
    return crypto.unseal_meta(storage, token_meta(name), sealed)


def seal_approle(storage: SecureStorage, name: str, approle: AppRole) -> bytes:
    payload = json.dumps({"role_id": approle.role_id, "secret_id": approle.secret_id})
    return crypto.seal_meta(storage, approle_meta(name), payload)


def unseal_approle(storage: SecureStorage, name: str, sealed: bytes) -> AppRole:
    try:
        data = json.loads(crypto.unseal_meta(storage, approle_meta(name), sealed))
        return AppRole(str(data["role_id"]), str(data["secret_id"]))
    except (ValueError, KeyError, TypeError):
        raise errors.IntegrityError(f"the sealed meta {approle_meta(name)} is not an AppRole") from None


def seal_jwt(storage: SecureStorage, name: str, login: Jwt) -> bytes:
    payload = json.dumps({"role": login.role, "jwt": login.jwt, "path": login.path})
    return crypto.seal_meta(storage, jwt_meta(name), payload)


def unseal_jwt(storage: SecureStorage, name: str, sealed: bytes) -> Jwt:
    try:
        data = json.loads(crypto.unseal_meta(storage, jwt_meta(name), sealed))
        jwt, path = data["jwt"], data["path"]
        if not isinstance(jwt, (str, type(None))) or not isinstance(path, (str, type(None))):
            raise TypeError
        return Jwt(str(data["role"]), jwt, path)
    except (ValueError, KeyError, TypeError):
        raise errors.IntegrityError(f"the sealed meta {jwt_meta(name)} is not a JWT login") from None
