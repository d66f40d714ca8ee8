"""The op vocabulary: every op, its arguments, and the limits a message keeps to.

Rules of this module:
- it is the one place that names ops and their arguments: adding an operation
  touches ``OPS`` here and one handler in the agent, nothing else;
- it says what may be sent, never how: framing and encoding are ``client.protocol``'s,
  which re-exports every name here, so ``protocol.OPS`` is the same table;
- changes are additive (an op or an optional argument more); only an incompatible
  change bumps ``client.protocol.PROTOCOL_VERSION``.
"""

from __future__ import annotations

# as client.protocol: no typing or dataclasses at run time (the import rows of benchmarks/run.py)
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from typing import Final

__all__ = [
    "MAX_FRAME",
    "DEFAULT_TYPE",
    "KEY_SOURCES",
    "MAX_NAME",
    "MAX_VALUE",
    "MAX_TOKEN",
    "MAX_EXPIRES",
    "Arg",
    "OPS",
    "RETRY_SAFE",
    "SLOW_OPS",
    "LIST_PAGE",
    "retry_allowed",
]

# As ssh-agent's AGENT_MAX_LEN: a frame of an API-key agent is a few hundred bytes;
# the limit only bounds what a confused or hostile peer can make us buffer.
MAX_FRAME: Final = 256 * 1024
# the credential type a request means when it names none
DEFAULT_TYPE: Final = "api-key"
# where a vault's master key lives: `init`'s key_source, `status`'s key_source
KEY_SOURCES: Final = ("keyring", "passphrase")

# Names (platforms, credential types): what every keystore and file name accepts.
MAX_NAME: Final = 64
# A value is an API key or token; 64 KiB leaves room for JWT-sized secrets and PEM keys.
MAX_VALUE = 64 * 1024
# `encrypt` takes at most MAX_VALUE bytes of UTF-8, whose token is 4/3 of that plus
# under 100 bytes (Fernet's base64); `decrypt` refuses what could not be one of its own.
MAX_TOKEN: Final = 2 * MAX_VALUE
# expires_at is a Unix time; 9999-12-31T23:59:59Z is the last one every client can format
MAX_EXPIRES: Final = 253402300799.0


class Arg:
    """One argument of an op: its name, accepted Python types, whether required.

    A plain slotted class rather than a dataclass: see the imports.
    """

    __slots__ = ("exact", "name", "required", "types")

    def __init__(self, name: str, types: tuple[type, ...], required: bool = True) -> None:
        self.name = name
        self.types = types
        self.required = required
        # values of these exact types need no further check (a dict needs its keys
        # checked; a bool passes only where bool itself is listed)
        self.exact = frozenset(t for t in types if t is not dict)

    def __repr__(self) -> str:
        return f"Arg({self.name!r}, {self.types!r}, required={self.required!r})"


def _name(name: str, required: bool = True) -> Arg:
    return Arg(name, (str,), required)


_PLATFORM = _name("platform")
_TYPE = _name("credential_type", required=False)
_VALUE = Arg("value", (str,))
_META = Arg("metadata", (dict, type(None)), required=False)
_VALIDATE = Arg("validate", (bool,), required=False)
_EXPIRES = Arg("expires_at", (int, float, type(None)), required=False)
# store: keep=true keeps the replaced credential's metadata and expiry where none is
# given (expires_at nil clears it); merge_metadata=true lays the given metadata over it
_KEEP = Arg("keep", (bool,), required=False)
_MERGE = Arg("merge_metadata", (bool,), required=False)
# a team vault named in the config file ([remote.NAME]): writes go there instead of the local vault
_REMOTE = _name("remote", required=False)

# op name -> its arguments. The whole vocabulary of the protocol.
OPS: Final[Mapping[str, tuple[Arg, ...]]] = {
    "hello": (),
    "status": (),
    "stop": (),
    # recovery_code: make the vault's first recovery code too (the result's "recovery_code")
    "init": (
        _name("key_source", required=False),
        Arg("passphrase", (str,), required=False),
        Arg("recovery_code", (bool,), required=False),
    ),
    # lock_after: lock again this many seconds after unlocking, whatever the use
    "unlock": (Arg("passphrase", (str,), required=False), Arg("lock_after", (int, float), required=False)),
    "lock": (),
    "store": (_PLATFORM, _VALUE, _TYPE, _META, _VALIDATE, _EXPIRES, _KEEP, _MERGE, _REMOTE),
    "update": (_PLATFORM, _VALUE, _TYPE, _META, _VALIDATE, _EXPIRES, _MERGE, _REMOTE),
    # expiry=true: the result is {"value", "expires_at"} instead of the bare value
    # command: the program `agent exec`/`agent run` fetches it for, for the audit log
    "get": (_PLATFORM, _TYPE, Arg("expiry", (bool,), required=False), Arg("command", (str,), required=False)),
    "delete": (_PLATFORM, _TYPE, _REMOTE),
    # replace=true: overwrite a credential already stored under the new name
    "rename": (
        _PLATFORM,
        _TYPE,
        _name("new_platform"),
        _name("new_credential_type", required=False),
        Arg("replace", (bool,), required=False),
    ),
    # offset/limit: one page of the listing (entries[offset:offset+limit]); without
    # them, the whole listing, as before (see LIST_PAGE). after: [platform, type], the
    # page starts after that name instead of at offset (a cursor: an agent that predates
    # it ignores it and pages by offset)
    "list": (
        Arg("offset", (int,), required=False),
        Arg("limit", (int,), required=False),
        Arg("after", (list,), required=False),
    ),
    "metadata": (_PLATFORM, _TYPE),
    "validate": (_PLATFORM, _VALUE),
    # by: only rows whose executable, Python script or module, or exec/run command is this
    "audit": (
        Arg("since", (int, float), required=False),
        _name("platform", required=False),
        Arg("limit", (int,), required=False),
        Arg("by", (str,), required=False),
    ),
    "rotate_key": (Arg("passphrase", (str,), required=False), Arg("new_passphrase", (str,), required=False)),
    # the original SecureStorage API, run in the agent: text in, a token (bytes) out, and back
    "encrypt": (Arg("data", (str,)),),
    "decrypt": (Arg("token", (bytes,)),),
    # the same master key under another key source (passphrase: the current one, for a passphrase
    # vault; a keystore vault's approval PIN)
    "rekey": (
        _name("key_source"),
        Arg("passphrase", (str,), required=False),
        Arg("new_passphrase", (str,), required=False),
    ),
    # a new recovery code: the result's "code" is its only copy; passphrase: the vault's, or a
    # keystore vault's approval PIN (proof that the user is there)
    "recovery_code": (Arg("passphrase", (str,), required=False),),
    # open with the recovery code, give the key a new home (key_source), unlock
    "recover": (Arg("code", (str,)), _name("key_source"), Arg("new_passphrase", (str,), required=False)),
    # team vaults: a token (or an AppRole's role and secret id, or a JWT) kept sealed in the local
    # vault; status per remote; a refresh of the cache now
    "remote_login": (
        _name("remote"),
        Arg("token", (str,), required=False),
        Arg("role_id", (str,), required=False),
        Arg("secret_id", (str,), required=False),
        Arg("jwt", (str,), required=False),  # a JWT for jwt_role of OpenBao's jwt auth method ...
        Arg("jwt_role", (str,), required=False),
        Arg("jwt_file", (str,), required=False),  # ... or the file the agent reads it from at each login
    ),
    "remote_status": (),
    "remote_sync": (_REMOTE,),
    # previous values (newest first, version 1 the last before the current one): a listing
    # without values, of one name or (no platform) of every name; one version's value; a
    # version made current again
    "history": (_name("platform", required=False), _TYPE, Arg("limit", (int,), required=False)),
    "history_value": (_PLATFORM, _TYPE, Arg("version", (int,))),
    "history_restore": (_PLATFORM, _TYPE, Arg("version", (int,))),
    # reads waiting for the user's approval ([access] rules), and the user's answer: allow
    # needs the secret (the vault's passphrase, or a keystore vault's approval PIN);
    # remember: "once", "process" or "program", or for_s seconds for any caller
    "approvals": (),
    "approve": (
        Arg("request", (int,)),
        Arg("allow", (bool,)),
        Arg("secret", (str,), required=False),
        _name("remember", required=False),
        Arg("for_s", (int, float), required=False),
    ),
    # a keystore vault's approval PIN (current: the one it replaces, or a passphrase vault's passphrase)
    "approval_pin": (Arg("pin", (str,)), Arg("current", (str,), required=False)),
    # keys: [[platform, credential_type], ...] granted to the caller's own process tree (agent
    # exec/run --grant); other keys asked for from inside it need the user's approval
    "grant": (Arg("keys", (list,)),),
    # the terminal (the caller's own) where the configured pinentry asks for approvals
    "approve_here": (Arg("tty", (str,)),),
}

# Ops a client may send again when the connection died after the request went out
# and before its reply came back: the agent may already have run it, and running it
# twice must give the same state and an equally good reply. Reads, writes that set
# a whole record (store/update: the same value and metadata again), unlock/lock
# (the same state again), encrypt (another token, as good) and decrypt qualify.
# Not these: delete (the replay says NotFound), init (already_exists), rotate_key
# (a second rotation), stop (stops a restarted agent), rename (not_found), rekey
# (already there), recovery_code (a second code), recover, history_restore (each
# restore adds a version, so version N names another value the second time).
RETRY_SAFE: Final = frozenset(
    {
        "hello",
        "status",
        "get",
        "list",
        "metadata",
        "validate",
        "audit",
        "store",
        "update",
        "unlock",
        "lock",
        "encrypt",
        "decrypt",
        "remote_status",
        "remote_sync",
        "history",
        "history_value",
        "approvals",
        "approve_here",
    }
)
# Ops that run scrypt, maybe after the wrong-passphrase delay, maybe after a
# keystore round trip, or several team-vault round trips: a client waits longer
# for them than for the others.
SLOW_OPS: Final = frozenset(
    {
        "init",
        "unlock",
        "rotate_key",
        "rekey",
        "recovery_code",
        "recover",
        "remote_login",
        "remote_sync",
        "approve",
        "approval_pin",
    }
)


# Ops a keystore vault unlocks itself for (gpg-agent style): a client that starts an agent
# for one of them says so, and that agent reads its key from the keystore while it loads
# (agent.keys.early) instead of after. Only a shortcut: a wrong answer costs time, not a result.
UNLOCKS: Final = frozenset({"get", "metadata", "store", "update", "unlock"})


def retry_allowed(ops: Iterable[str], sent: bool) -> bool:
    """Whether a client may resend a batch of ``ops`` on a new connection after the
    old one failed before any reply: always when the failure came before the request
    left (``sent`` false: connecting, or the write itself failed), else only when every
    op is in ``RETRY_SAFE``."""
    return not sent or all(op in RETRY_SAFE for op in ops)


# Entries per `list` page: the most that provably fit one reply frame. A listing
# entry is 6 fields (about 230 bytes with 64-character names and float times) plus
# its metadata, bounded by client.validation: at most 256 items, each a scalar or an
# ext of at most 15 bytes, a container header or a string header of at most 3, each
# under a key with a header of at most 3; plus at most 4096 characters of text, 4
# bytes each in UTF-8. tests/client/test_list_paging.py recomputes this bound from the
# validation limits and checks that a page of the largest entries fits.
_ENTRY_FIELDS_MAX: Final = 300
_METADATA_MAX: Final = 5 + 256 * (15 + 3) + 4 * 4096  # 20_997 bytes
LIST_PAGE: Final = (MAX_FRAME - 64) // (_ENTRY_FIELDS_MAX + _METADATA_MAX)  # 12
