"""Agent settings: flags > environment > config file > defaults, one expression each.

The config file is TOML (``paths.config_path()``, override with
``CREDENTIAL_AGENT_CONFIG``). An unknown key or a wrong type is an error that
names the key and the file.
"""

from __future__ import annotations

import argparse
import os
import tomllib
from pathlib import Path
from typing import Any, Final

from agent.core import Options
from agent.server import CONNECTION_IDLE_TIMEOUT, MAX_CONNECTIONS
from client import errors, paths

__all__ = ["load_options", "read_file", "KEYS", "ConfigError"]

# key -> (accepted types, environment variable)
KEYS: Final[dict[str, tuple[tuple[type, ...], str | None]]] = {
    "idle_timeout": ((int, float), "CREDENTIAL_AGENT_IDLE_TIMEOUT"),
    "max_unlocked": ((int, float), "CREDENTIAL_AGENT_MAX_UNLOCKED"),
    "keystore_timeout": ((int, float), "CREDENTIAL_AGENT_KEYSTORE_TIMEOUT"),
    "max_connections": ((int,), "CREDENTIAL_AGENT_MAX_CONNECTIONS"),
    "connection_idle_timeout": ((int, float), "CREDENTIAL_AGENT_CONNECTION_IDLE_TIMEOUT"),
}


class ConfigError(errors.BadRequest):
    pass


def read_file(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        return {}
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: {e}") from None
    except OSError as e:
        raise ConfigError(f"{path}: {e.strerror}") from None
    for key, value in data.items():
        if key not in KEYS:
            raise ConfigError(f"{path}: unknown key {key!r} (known: {', '.join(sorted(KEYS))})")
        if not isinstance(value, (int, float)) or not isinstance(value, KEYS[key][0]) or isinstance(value, bool):
            raise ConfigError(f"{path}: {key!r} must be {_what(key)}")
        if value < 0:
            raise ConfigError(f"{path}: {key!r} must be 0 (off) or positive")
    return data


def _what(key: str) -> str:
    return "a whole number" if KEYS[key][0] == (int,) else "a number of seconds"


def _env_number(name: str, key: str) -> float | None:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = float(int(raw)) if KEYS[key][0] == (int,) else float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be {_what(key)}, got {raw!r}") from None
    if value < 0:
        raise ConfigError(f"{name} must be 0 (off) or positive")
    return value


def _pick(flag: float | None, key: str, file: dict[str, Any], default: float) -> float:
    env = KEYS[key][1]
    env_value = _env_number(env, key) if env else None
    file_value = file.get(key)
    return float(next(v for v in (flag, env_value, file_value, default) if v is not None))


def load_options(args: argparse.Namespace) -> Options:
    file = read_file(paths.config_path())
    return Options(
        socket=paths.socket_path(),
        vault=paths.vault_path(),
        idle_timeout=_pick(getattr(args, "idle_timeout", None), "idle_timeout", file, 0.0),
        max_unlocked=_pick(getattr(args, "max_unlocked", None), "max_unlocked", file, 0.0),
        keystore_deadline=_pick(None, "keystore_timeout", file, 10.0),
        max_connections=int(_pick(None, "max_connections", file, MAX_CONNECTIONS)),
        connection_idle_timeout=_pick(None, "connection_idle_timeout", file, CONNECTION_IDLE_TIMEOUT),
    )
