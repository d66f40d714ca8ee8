"""Agent settings: flags > environment > config file > defaults, one expression each.

The config file is TOML (``paths.config_path()``, override with
``CREDENTIAL_AGENT_CONFIG``); its keys, types and environment variables are the
table ``client._config.KEYS``, shared with the client (which reads ``socket`` and
``autostart`` itself, without loading agent code). An unknown key or a wrong type
is an error that names the key and the file.
"""

from __future__ import annotations

import argparse

from agent.core import Options
from client import paths
from client._config import KEYS, ConfigError, setting

__all__ = ["load_options", "setting", "KEYS", "ConfigError"]


def load_options(args: argparse.Namespace) -> Options:
    return Options(
        socket=paths.socket_path(),
        vault=paths.vault_path(),
        idle_timeout=setting("idle_timeout", getattr(args, "idle_timeout", None)),
        max_unlocked=setting("max_unlocked", getattr(args, "max_unlocked", None)),
        keystore_deadline=setting("keystore_timeout"),
        max_connections=setting("max_connections"),
        connection_idle_timeout=setting("connection_idle_timeout"),
        audit_keep=setting("audit_keep"),
    )
