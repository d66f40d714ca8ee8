"""The profile and the config file's place: what every other path and setting starts from.

Rules of this module:
- it imports nothing of this project but ``client.errors`` (which imports nothing of
  it), so ``client.paths`` (where the runtime files live) and ``client.config`` (what
  the config file says) both build on it and neither imports the other's way back;
- the config file's location cannot come from the config file, so it is decided
  here, by the environment and the platform alone;
- stdlib only, and on Linux nothing beyond ``os``: the socket path, which every
  client computes, looks here for a config file without importing pathlib or
  platformdirs.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Final

__all__ = ["APP", "profile", "app_name", "config_dir", "config_path", "config_may_exist"]

APP: Final = "credential-agent"


def profile() -> str:
    return os.environ.get("CREDENTIAL_AGENT_PROFILE", "")


def app_name() -> str:
    p = profile()
    if p and not all(c.isascii() and (c.isalnum() or c in "-_") for c in p):
        from client.errors import ConfigError

        raise ConfigError(f"CREDENTIAL_AGENT_PROFILE may hold only ASCII letters, digits, '-' and '_', not {p!r}")
    return f"{APP}-{p}" if p else APP


def _linux_config_dir() -> str:
    # what platformdirs answers on Linux, without importing it on every client's path
    base = os.environ.get("XDG_CONFIG_HOME", "").strip() or os.path.expanduser("~/.config")
    return os.path.join(base, app_name())


def config_dir() -> Path:
    from pathlib import Path

    if sys.platform.startswith("linux"):
        return Path(_linux_config_dir())
    import platformdirs

    return Path(platformdirs.user_config_dir(app_name(), appauthor=False))


def config_path() -> Path:
    from pathlib import Path

    return Path(os.environ.get("CREDENTIAL_AGENT_CONFIG") or config_dir() / "config.toml")


def config_may_exist() -> bool:
    """False when there is certainly no config file, decided without an import on Linux:
    the common case (no file) costs one ``stat``."""
    if os.environ.get("CREDENTIAL_AGENT_CONFIG") or not sys.platform.startswith("linux"):
        return True
    return os.path.exists(os.path.join(_linux_config_dir(), "config.toml"))
