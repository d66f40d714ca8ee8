"""The config file: one table of documented keys, read by the client and the agent.

Rules of this module:
- stdlib only, and ``tomllib`` is imported only when a config file exists: the
  client reads ``socket`` and ``autostart`` here without loading any agent code;
- ``KEYS`` is the whole vocabulary: an unknown key or a wrong type is a
  ``client.ConfigError`` naming the file, the line and the key (and for an unknown
  key the nearest known one), on whichever side reads it first;
- every setting in seconds takes a duration (``parse_duration``: ``900``, ``15m``,
  ``1h30m``), in the file (a ``[remote.NAME]`` table's too), the environment and on
  the command line: this is the one duration parser, and ``format_duration`` the one
  way a message shows a span of time in the units it takes;
- precedence is flags > environment > file > defaults; this module knows the
  file and the environment variable of each key, the caller supplies the flag.
"""

from __future__ import annotations

import os
import re

from client import _profile, errors
from client.protocol import KEY_SOURCES

# the CLI imports this module for its choices: dataclasses (with inspect), pathlib
# and typing would weigh on every command
TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any, Final

__all__ = [
    "KEYS",
    "Key",
    "ConfigError",
    "read",
    "file_value",
    "setting",
    "parse_duration",
    "format_duration",
    "LOG_LEVELS",
    "KEY_SOURCES",
]

LOG_LEVELS: Final = ("debug", "info", "warning", "error")
ConfigError = errors.ConfigError  # documented as client.ConfigError; kept here for older imports

_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "y": 365 * 86400}
_DURATION_RE: Final = re.compile(r"(\d+(?:\.\d+)?)([smhdwy])")
_NUMBER_RE: Final = re.compile(r"\d+(?:\.\d+)?")
_BARE_DURATION_RE: Final = re.compile(r"=\s*\d+(?:\.\d+)?[smhdwy]", re.MULTILINE)


def parse_duration(text: str) -> float:
    """``90`` (seconds), ``90s``, ``15m``, ``2h``, ``1h30m``, ``90d``, ``2w``, ``1y`` -> seconds.

    Raises ``ValueError`` with a message that shows the accepted forms."""
    text = text.strip()
    if _NUMBER_RE.fullmatch(text):
        return float(text)
    parts = _DURATION_RE.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not a duration: {text!r} (use seconds, or e.g. 90s, 15m, 2h, 1h30m, 90d)")
    return sum(float(n) * _UNITS[u] for n, u in parts)


def format_duration(seconds: float) -> str:
    """``3d``, ``14h``, ``5m``, ``30s``: the largest whole unit of a span, for a short
    column (``agent ls``'s expiry, a remote's cache age); ``parse_duration`` reads it back."""
    for unit in ("d", "h", "m"):
        if seconds >= _UNITS[unit]:
            return f"{seconds // _UNITS[unit]:.0f}{unit}"
    return f"{seconds:.0f}s"


class Key:
    """One documented key (read-only by convention: the table is the vocabulary)."""

    __slots__ = ("choices", "default", "doc", "env", "kind")

    def __init__(self, kind: str, env: str | None, default: Any, doc: str, choices: tuple[str, ...] = ()) -> None:
        self.kind = kind  # "seconds" | "count" | "path" | "bool" | "choice" | "tables"
        self.env = env
        self.default = default
        self.doc = doc
        self.choices = choices

    def __repr__(self) -> str:
        return f"Key({self.kind!r}, {self.env!r}, {self.default!r})"


KEYS: Final[dict[str, Key]] = {
    "socket": Key(
        "path",
        "CREDENTIAL_AGENT_SOCK",
        None,
        "the agent's Unix socket (default: <runtime dir>/credential-agent/agent.sock)",
    ),
    "log_level": Key("choice", "CREDENTIAL_AGENT_LOG_LEVEL", "info", "the agent's log level", LOG_LEVELS),
    "log_max_bytes": Key(
        "count",
        "CREDENTIAL_AGENT_LOG_MAX_BYTES",
        10 * 1024 * 1024,
        "the agent's log file starts anew past this size, keeping one older file (0 = never)",
    ),
    "idle_timeout": Key(
        "seconds", "CREDENTIAL_AGENT_IDLE_TIMEOUT", 0.0, "lock after this many seconds without credential use (0 = off)"
    ),
    "max_unlocked": Key(
        "seconds",
        "CREDENTIAL_AGENT_MAX_UNLOCKED",
        0.0,
        "lock this many seconds after unlocking, whatever the use (0 = off)",
    ),
    "keystore_timeout": Key("seconds", "CREDENTIAL_AGENT_KEYSTORE_TIMEOUT", 10.0, "deadline for one OS keystore call"),
    "max_connections": Key(
        "count",
        "CREDENTIAL_AGENT_MAX_CONNECTIONS",
        512,
        "open client connections the agent accepts (0 = no cap; lowered to fit the fd limit)",
    ),
    "connection_idle_timeout": Key(
        "seconds",
        "CREDENTIAL_AGENT_CONNECTION_IDLE_TIMEOUT",
        300.0,
        "close a client connection silent for this many seconds (0 = never)",
    ),
    "frame_timeout": Key(
        "seconds",
        "CREDENTIAL_AGENT_FRAME_TIMEOUT",
        10.0,
        "close a connection whose request does not arrive whole this many seconds after its first byte (0 = never)",
    ),
    "audit_keep": Key(
        "count", "CREDENTIAL_AGENT_AUDIT_KEEP", 10_000, "newest audit-log rows kept in the vault (0 = no audit log)"
    ),
    "history_keep": Key(
        "count",
        "CREDENTIAL_AGENT_HISTORY_KEEP",
        10,
        "previous values kept per credential after an overwrite or a deletion (0 = none)",
    ),
    "history_max_age": Key(
        "seconds",
        "CREDENTIAL_AGENT_HISTORY_MAX_AGE",
        90 * 86400.0,
        "how long a previous value is kept after it was replaced or deleted (0 = no limit)",
    ),
    "key_source": Key(
        "choice", "CREDENTIAL_AGENT_KEY_SOURCE", None, "the key source `agent init` uses by default", KEY_SOURCES
    ),
    # [access."PATTERN"] tables: which programs may read which credentials; agent.access checks them
    "access": Key("tables", None, None, 'rules per credential: allow, confirm, deny, only ([access."PATTERN"] tables)'),
    "pinentry": Key(
        "path",
        "CREDENTIAL_AGENT_PINENTRY",
        None,
        "a pinentry program that asks for approvals itself (on `agent approve --here`'s terminal, or the display)",
    ),
    "confirm_timeout": Key(
        "seconds",
        "CREDENTIAL_AGENT_CONFIRM_TIMEOUT",
        12.0,  # under a client's default 15 s timeout, so the caller gets Denied, not a timeout
        "how long a read that needs approval waits for `agent approve` before it is denied",
    ),
    # [remote.NAME] tables: team vaults (OpenBao / Vault KV v2); agent.remotes checks their keys
    "remote": Key("tables", None, None, "team vaults the agent reads through, in order ([remote.NAME] tables)"),
    # the environment variable is the negative one, as it always was: NO_AUTOSTART=1 turns it off
    "autostart": Key(
        "bool",
        "CREDENTIAL_AGENT_NO_AUTOSTART",
        True,
        "start an agent when a client finds none (false: raise AgentUnavailable)",
    ),
}

_cache: dict[Path, tuple[tuple[int, int], dict[str, Any]]] = {}


def check(key: str, value: Any, where: str) -> Any:
    """``value`` for ``key`` as the agent uses it, or a ConfigError naming both."""
    spec = KEYS.get(key)
    if spec is None:
        import difflib  # only here: reading a good config file never needs it

        near = difflib.get_close_matches(key, KEYS, n=1)
        hint = f"; did you mean {near[0]}?" if near else ""
        raise ConfigError(f"{where}: unknown key {key!r}{hint} (known: {', '.join(sorted(KEYS))})")
    if spec.kind == "seconds":
        if isinstance(value, str):
            try:
                value = parse_duration(value)
            except ValueError as e:
                raise ConfigError(f"{where}: {key!r}: {e}") from None
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ConfigError(
                f'{where}: {key!r} must be a duration (seconds, or e.g. "15m"), got {type(value).__name__}'
            )
        if not value >= 0 or value == float("inf"):
            raise ConfigError(f"{where}: {key!r} must be 0 (off) or a positive number of seconds")
        return float(value)
    if spec.kind == "count":
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ConfigError(f"{where}: {key!r} must be a whole number, 0 or more, got {value!r}")
        return value
    if spec.kind == "tables":
        if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
            raise ConfigError(f"{where}: {key!r} must hold tables ([{key}.NAME]), got {type(value).__name__}")
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
        text = path.read_bytes().decode("utf-8")
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        hint = ' (a duration is a string: "15m")' if _BARE_DURATION_RE.search(text) else ""
        raise ConfigError(f"{path}: not valid TOML: {e}{hint}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not valid TOML: the file is not UTF-8") from None
    except OSError as e:
        raise ConfigError(f"{path}: {e.strerror}") from None
    data = {key: check(key, value, _where(path, text, key)) for key, value in raw.items()}
    _cache[path] = (stamp, data)
    return data


def _where(path: Path, text: str, key: str) -> str:
    """``path, line N``: where ``key`` (or its ``[table]``) is set in the file."""
    pattern = re.compile(
        rf"""\s*(?:{re.escape(key)}|"{re.escape(key)}"|'{re.escape(key)}')\s*[=.]"""
        rf"""|\s*\[+\s*(?:{re.escape(key)}|"{re.escape(key)}")\s*[].]"""
    )
    for number, line in enumerate(text.splitlines(), 1):
        if pattern.match(line):
            return f"{path}, line {number}"
    return str(path)


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
    if KEYS[key].kind == "seconds":
        return check(key, raw, name)  # a duration: 900, 15m, 1h30m
    if KEYS[key].kind == "count":
        try:
            return check(key, int(raw), name)
        except ValueError:
            raise ConfigError(f"{name}: {key!r} must be a whole number, got {raw!r}") from None
    return check(key, raw, name)


def setting(key: str, flag: Any = None) -> Any:
    """One setting: the flag if given, else the environment, else the file, else the default."""
    if flag is not None:  # the file is not read at all (Client(autostart=False) finding no agent)
        return check(key, flag, f"--{key.replace('_', '-')}")
    return next(
        (v for v in (_env(key), file_value(_profile.config_path(), key)) if v is not None),
        KEYS[key].default,
    )
