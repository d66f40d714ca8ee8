"""One flat exception tree shared by the agent and its clients.

Rules of this module:
- every class has a stable snake_case wire ``code``; ``CODES`` maps code -> class
  and is the only table the protocol consults;
- classes mix in the builtin a caller would expect (``AgentUnavailable`` is a
  ``ConnectionError``, ``NotFound`` a ``KeyError``-like ``LookupError``);
- a message never contains a secret, the request's bytes, or a traceback.
"""

from __future__ import annotations

__all__ = [
    "AgentError",
    "BadRequest",
    "ConfigError",
    "UnsupportedVersion",
    "UnknownOp",
    "Locked",
    "Denied",
    "NotFound",
    "AlreadyExists",
    "InvalidCredential",
    "BadPassphrase",
    "NotInitialized",
    "KeystoreUnavailable",
    "KeystoreLocked",
    "StorageError",
    "IntegrityError",
    "InvalidToken",
    "TooManyConnections",
    "Busy",
    "Internal",
    "Expired",
    "RemoteUnavailable",
    "RemoteDenied",
    "Conflict",
    "AgentUnavailable",
    "UntrustedSocket",
    "AgentTimeout",
    "ProtocolError",
    "CODES",
    "from_wire",
]


class AgentError(Exception):
    """Base of every error this project raises on purpose."""

    code = "agent_error"
    default_message = "credential agent error"

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.default_message)

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else self.default_message


class BadRequest(AgentError, ValueError):
    code = "bad_request"
    default_message = "malformed request"


class ConfigError(BadRequest):
    """A setting that cannot be used: a config file's unknown key or bad value (its
    message names the file, the line and the nearest known key), or a bad environment
    variable or flag. Raised by every client and the agent when they read it."""

    code = "config_error"
    default_message = "the credential agent's configuration cannot be used"


class UnsupportedVersion(AgentError):
    code = "unsupported_version"
    default_message = "unsupported protocol version"


class UnknownOp(AgentError):
    code = "unknown_op"
    default_message = "unknown operation"


class Locked(AgentError, PermissionError):
    code = "locked"
    default_message = "the agent is locked; run `agent unlock`"


class Denied(AgentError, PermissionError):
    """A rule of the config file's ``[access]`` tables keeps this credential from this
    program, or the user did not approve the read in time (``agent approve``)."""

    code = "denied"
    default_message = "reading this credential was not allowed"


class NotFound(AgentError, LookupError):
    code = "not_found"
    default_message = "no such credential"


class AlreadyExists(AgentError):
    code = "already_exists"
    default_message = "already exists"


class InvalidCredential(AgentError, ValueError):
    code = "invalid_credential"
    default_message = "the credential failed validation"


class BadPassphrase(AgentError, PermissionError):
    code = "bad_passphrase"
    default_message = "wrong passphrase"


class NotInitialized(AgentError):
    code = "not_initialized"
    default_message = "no vault yet; run `agent init`"


class KeystoreUnavailable(AgentError):
    code = "keystore_unavailable"
    default_message = "the OS keystore is not available"


class KeystoreLocked(KeystoreUnavailable):
    code = "keystore_locked"
    default_message = "the OS keystore is locked; unlock it (log in to the desktop session) and retry"


class StorageError(AgentError, OSError):
    code = "storage_error"
    default_message = "the vault could not be written"


class IntegrityError(AgentError):
    code = "integrity_error"
    default_message = "a stored credential failed its integrity check (tampered or corrupted); it was not returned"


class InvalidToken(AgentError, ValueError):
    """A ``decrypt`` token this vault's agent did not make, or one changed since."""

    code = "invalid_token"
    default_message = (
        "the token was not made by this vault's agent, or it was altered or cut short; nothing was decrypted"
    )


class TooManyConnections(AgentError):
    code = "too_many_connections"
    default_message = "the agent has too many open connections; retry later"


class Busy(AgentError):
    """Too much of one kind of work is already waiting (unlock attempts)."""

    code = "busy"
    default_message = "the agent has too many requests of this kind waiting; retry later"


class Expired(AgentError, PermissionError):
    """The credential is past its expiry and the caller chose to refuse expired ones."""

    code = "expired"
    default_message = "the credential has expired; store a new one with `agent set`"


class RemoteUnavailable(AgentError, ConnectionError):
    """No node of a team vault (OpenBao / Vault) answered in time, and nothing usable is cached."""

    code = "remote_unavailable"
    default_message = "the team vault did not answer; see `agent remote status`"


class RemoteDenied(AgentError, PermissionError):
    """The team vault refused the agent's token for a path (its policy, or a token no longer valid)."""

    code = "remote_denied"
    default_message = "the team vault denied access; see `agent remote status`"


class Conflict(AgentError):
    """A check-and-set write lost: the secret changed upstream since the agent read it."""

    code = "conflict"
    default_message = "the secret changed upstream since the agent read it; nothing was written"


class Internal(AgentError):
    code = "internal"
    default_message = "internal error in the agent; see its log"


class ProtocolError(AgentError):
    """The peer sent something that is not this protocol (client side)."""

    code = "protocol_error"
    default_message = "the agent sent an invalid reply"


class AgentUnavailable(AgentError, ConnectionError):
    """No agent answers on the socket (client side only; never sent on the wire)."""

    code = "agent_unavailable"
    default_message = "no credential agent is running; start one with `agent start`"


class UntrustedSocket(AgentUnavailable, PermissionError):
    """The socket is not owned by this user or others may use it (impostor protection)."""

    code = "untrusted_socket"
    default_message = "refusing an agent socket that another user could control"


class AgentTimeout(AgentError, TimeoutError):
    """The agent did not answer within the client's timeout (client side only)."""

    code = "timeout"
    default_message = "the credential agent did not answer in time"


CODES: dict[str, type[AgentError]] = {
    cls.code: cls
    for cls in (
        BadRequest,
        ConfigError,
        UnsupportedVersion,
        UnknownOp,
        Locked,
        Denied,
        NotFound,
        AlreadyExists,
        InvalidCredential,
        BadPassphrase,
        NotInitialized,
        KeystoreUnavailable,
        KeystoreLocked,
        StorageError,
        IntegrityError,
        InvalidToken,
        TooManyConnections,
        Busy,
        Internal,
        Expired,
        RemoteUnavailable,
        RemoteDenied,
        Conflict,
    )
}


def from_wire(code: object, message: object) -> AgentError:
    """Build the exception for an error reply; unknown codes stay an ``AgentError``."""
    text = message if isinstance(message, str) else None
    cls = CODES.get(code, AgentError) if isinstance(code, str) else AgentError
    err = cls(text)
    if cls is AgentError and isinstance(code, str):
        # a newer agent may send codes this client does not know: keep the code
        err.code = code
    return err
