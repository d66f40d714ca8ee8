"""The config file: one table of documented keys, read by the client and the agent.

Rules of this module:
- stdlib only, and ``tomllib`` is imported only when a config file exists: the
  client reads ``socket`` and ``autostart`` here without loading any agent code;
- ``KEYS`` is the whole vocabulary: an unknown key or a wrong type is a
  ``ConfigError`` naming the key and the file, on whichever side reads it first;
- precedence is flags > environment > file > defaults; this module knows the
  file and the environment variable of each key, the caller supplies the flag.
"""

from __future__ import annotations

import os

from client import _profile, errors
from client.protocol import KEY_SOURCES

# the CLI imports this module for its choices: dataclasses (with inspect), pathlib
# and typing would weigh on every command
TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any, Final

__all__ = ["KEYS", "Key", "ConfigError", "read", "file_value", "setting", "LOG_LEVELS", "KEY_SOURCES"]

LOG_LEVELS: Final = ("debug", "info", "warning", "error")


class ConfigError(errors.BadRequest):
    """A config file or environment variable the agent cannot use."""


class Key:
    """One documented key (read-only by convention: the table is the vocabulary)."""

    __slots__ = ("choices", "default", "doc", "env", "kind")

    def __init__(self, kind: str, env: str | None, default: Any, doc: str, choices: tuple[str, ...] = ()) -> None:
        self.kind = kind  # "seconds" | "count" | "path" | "bool" | "choice"
        self.env = env
        self.default = default
        self.doc = doc
        self.choices = choices

    def __repr__(self) -> str:
        return f"Key({self.kind!r}, {self.env!r}, {self.default!r})"


KEYS: Final[dict[str, Key]] = {
    "socket": Key("path", "CREDENTIAL_AGENT_SOCK", None,
                  "the agent's Unix socket (default: <runtime dir>/credential-agent/agent.sock)"),
    "log_level": Key("choice", "CREDENTIAL_AGENT_LOG_LEVEL", "info", "the agent's log level", LOG_LEVELS),
    "idle_timeout": Key("seconds", "CREDENTIAL_AGENT_IDLE_TIMEOUT", 0.0,
                        "lock after this many seconds without credential use (0 = off)"),
    "max_unlocked": Key("seconds", "CREDENTIAL_AGENT_MAX_UNLOCKED", 0.0,
                        "lock this many seconds after unlocking, whatever the use (0 = off)"),
    "keystore_timeout": Key("seconds", "CREDENTIAL_AGENT_KEYSTORE_TIMEOUT", 10.0,
                            "deadline for one OS keystore call"),
    "max_connections": Key("count", "CREDENTIAL_AGENT_MAX_CONNECTIONS", 512,
                           "open client connections the agent accepts (0 = no cap; lowered to fit the fd limit)"),
    "connection_idle_timeout": Key("seconds", "CREDENTIAL_AGENT_CONNECTION_IDLE_TIMEOUT", 300.0,
                                   "close a client connection silent for this many seconds (0 = never)"),
    "frame_timeout": Key("seconds", "CREDENTIAL_AGENT_FRAME_TIMEOUT", 10.0,
                         "close a connection whose request does not arrive whole this many seconds after its first "
                         "byte (0 = never)"),
    "audit_keep": Key("count", "CREDENTIAL_AGENT_AUDIT_KEEP", 10_000,
                      "newest audit-log rows kept in the vault (0 = no audit log)"),
    "key_source": Key("choice", "CREDENTIAL_AGENT_KEY_SOURCE", None,
                      "the key source `agent init` uses by default", KEY_SOURCES),
    # the environment variable is the negative one, as it always was: NO_AUTOSTART=1 turns it off
    "autostart": Key("bool", "CREDENTIAL_AGENT_NO_AUTOSTART", True,
                     "start an agent when a client finds none (false: raise AgentUnavailable)"),
}

_cache: dict[Path, tuple[tuple[int, int], dict[str, Any]]] = {}


def check(key: str, value: Any, where: str) -> Any:
    """``value`` for ``key`` as the agent uses it, or a ConfigError naming both."""
    spec = KEYS.get(key)
    if spec is None:
        raise ConfigError(f"{where}: unknown key {key!r} (known: {', '.join(sorted(KEYS))})")
    if spec.kind == "seconds":
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ConfigError(f"{where}: {key!r} must be a number of seconds, got {type(value).__name__}")
        if not value >= 0 or value == float("inf"):
            raise ConfigError(f"{where}: {key!r} must be 0 (off) or a positive number of seconds")
        return float(value)
    if spec.kind == "count":
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ConfigError(f"{where}: {key!r} must be a whole number, 0 or more, got {value!r}")
        return value
    if spec.kind == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: {key!r} must be true or false, got {type(value).__name__}")
        return value
    if not isinstance(value, str):
        raise ConfigError(f"{where}: {key!r} must be a string, got {type(value).__name__}")
    if spec.kind == "choice":
        if value not in spec.choices:
            raise ConfigError(f"{where}: {key!r} must be one of {', '.join(spec.choices)}, got {value!r}")
        return value
    from pathlib import Path

    path = Path(os.path.expanduser(value))
    if not path.is_absolute():
        raise ConfigError(f"{where}: {key!r} must be an absolute path (or start with ~), got {value!r}")
    return path


def read(path: Path) -> dict[str, Any]:
    """The checked contents of the config file at ``path``; {} when there is none."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return {}
    except OSError as e:
        raise ConfigError(f"{path}: {e.strerror}") from None
    stamp = (st.st_mtime_ns, st.st_size)
    cached = _cache.get(path)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    import tomllib

    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    except OSError as e:
        raise ConfigError(f"{path}: {e.strerror}") from None
    data = {key: check(key, value, str(path)) for key, value in raw.items()}
    _cache[path] = (stamp, data)
    return data


def file_value(path: Path, key: str) -> Any:
    """``key`` from the config file at ``path``, or None when the file does not set it."""
    return read(path).get(key)


def _env(key: str) -> Any:
    name = KEYS[key].env
    raw = os.environ.get(name, "") if name else ""
    if not name or raw == "":
        return None
    if KEYS[key].kind == "bool":  # CREDENTIAL_AGENT_NO_AUTOSTART: the negative form
        return raw == "0"
    if KEYS[key].kind in ("seconds", "count"):
        try:
            return check(key, float(raw) if KEYS[key].kind == "seconds" else int(raw), name)
        except ValueError:
            raise ConfigError(f"{name}: {key!r} must be a number, got {raw!r}") from None
    return check(key, raw, name)


def setting(key: str, flag: Any = None) -> Any:
    """One setting: the flag if given, else the environment, else the file, else the default."""
    if flag is not None:  # the file is not read at all (Client(autostart=False) finding no agent)
        return check(key, flag, f"--{key.replace('_', '-')}")
    return next(
        (v for v in (_env(key), file_value(_profile.config_path(), key)) if v is not None),
        KEYS[key].default,
    )
