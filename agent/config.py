"""Agent settings: flags > environment > config file > defaults, one expression each.

The config file is TOML (``paths.config_path()``, override with
``CREDENTIAL_AGENT_CONFIG``); its keys, types, defaults and environment variables
are the table ``client.config.KEYS``, shared with the client (which reads
``socket`` and ``autostart`` itself, without loading agent code). An unknown key
or a wrong type is an error that names the key and the file.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from agent import access, remotes
from client import paths
from client.config import KEYS, ConfigError, setting

__all__ = ["Options", "load_options", "setting", "KEYS", "ConfigError"]


def _default(key: str) -> Any:
    return KEYS[key].default


@dataclasses.dataclass(frozen=True)
class Options:
    socket: Path
    vault: Path
    idle_timeout: float = _default("idle_timeout")  # seconds without credential use before locking; 0 = off
    max_unlocked: float = _default("max_unlocked")  # seconds unlocked before locking, whatever the use; 0 = off
    keystore_deadline: float = _default("keystore_timeout")  # one OS keystore call
    socket_activated: bool = False  # the socket came from systemd (LISTEN_FDS)
    max_connections: int = _default("max_connections")  # open client connections; 0 = no cap
    connection_idle_timeout: float = _default("connection_idle_timeout")  # a silent connection's life; 0 = off
    frame_timeout: float = _default("frame_timeout")  # a request's first byte to its last; 0 = off
    audit_keep: int = _default("audit_keep")  # newest audit rows kept; 0 = no audit log
    history_keep: int = _default("history_keep")  # previous values kept per credential; 0 = none
    history_max_age: float = _default("history_max_age")  # seconds a previous value is kept; 0 = no limit
    remotes: tuple[remotes.RemoteOptions, ...] = ()  # team vaults, in resolution order
    access: tuple[access.Rule, ...] = ()  # which programs may read which credentials, in file order
    confirm_timeout: float = _default("confirm_timeout")  # a read waiting for approval; then denied
    pinentry: Path | None = None  # a pinentry program that asks for approvals


def load_options(args: object) -> Options:
    """The agent's options: ``args``' flags (``idle_timeout``, ``max_unlocked``; absent or None: the
    config's), then the config file and the environment."""
    # absolute: the agent serves from "/", whatever directory started it
    return Options(
        socket=paths.socket_path().absolute(),
        vault=paths.vault_path().absolute(),
        idle_timeout=setting("idle_timeout", getattr(args, "idle_timeout", None)),
        max_unlocked=setting("max_unlocked", getattr(args, "max_unlocked", None)),
        keystore_deadline=setting("keystore_timeout"),
        max_connections=setting("max_connections"),
        connection_idle_timeout=setting("connection_idle_timeout"),
        frame_timeout=setting("frame_timeout"),
        audit_keep=setting("audit_keep"),
        history_keep=setting("history_keep"),
        history_max_age=setting("history_max_age"),
        remotes=remotes.parse(setting("remote"), str(paths.config_path())),
        access=access.parse(setting("access"), str(paths.config_path())),
        confirm_timeout=setting("confirm_timeout"),
        pinentry=setting("pinentry"),
    )
