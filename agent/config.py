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

from agent.audit import DEFAULT_KEEP
from agent.core import Options
from client import errors, paths

__all__ = ["load_options", "read_file", "KEYS", "ConfigError"]

# key -> (accepted types, environment variable)
KEYS: Final[dict[str, tuple[tuple[type, ...], str | None]]] = {
    "idle_timeout": ((int, float), "CREDENTIAL_AGENT_IDLE_TIMEOUT"),
    "max_unlocked": ((int, float), "CREDENTIAL_AGENT_MAX_UNLOCKED"),
    "keystore_timeout": ((int, float), "CREDENTIAL_AGENT_KEYSTORE_TIMEOUT"),
    "audit_keep": ((int, float), "CREDENTIAL_AGENT_AUDIT_KEEP"),  # newest audit rows kept; 0 = off
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
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ConfigError(f"{path}: {key!r} must be a number of seconds")
        if value < 0:
            raise ConfigError(f"{path}: {key!r} must be 0 (off) or positive")
    return data


def _env_number(name: str) -> float | None:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds, got {raw!r}") from None
    if value < 0:
        raise ConfigError(f"{name} must be 0 (off) or positive")
    return value


def _pick(flag: float | None, key: str, file: dict[str, Any], default: float) -> float:
    env = KEYS[key][1]
    env_value = _env_number(env) if env else None
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
        audit_keep=int(_pick(None, "audit_keep", file, DEFAULT_KEEP)),
    )
