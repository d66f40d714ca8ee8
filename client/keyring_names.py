"""How keyring's (service, username) pairs map to agent names, and back.

Rules of this module: pure functions, no I/O, no keyring import (the CLI uses it
to show keyring entries readably).

Agent names are ``[A-Za-z0-9_-]{1,64}``; keyring service names are any string
(``https://upload.pypi.org/legacy/``). The mapping loses no character:

- platform ``keyring-<escaped service>``, credential type ``user-<escaped username>``;
- escaping keeps ASCII letters and digits and writes every other character as
  ``_xx`` per UTF-8 byte (``/`` -> ``_2f``, ``_`` -> ``_5f``, ``-`` -> ``_2d``), so an
  escaped name never contains ``-`` and decodes back exactly;
- in the platform, upper-case letters are escaped too (``S`` -> ``_53``): platform
  names are case-insensitive (``client.names``), keyring services are not, so
  ``Service`` and ``service`` must stay two lower-case names. Names made before
  that rule are renamed when the agent opens the vault (``legacy_platform``);
- a name whose escaped form would pass 64 characters becomes ``<prefix>-<sha256
  prefix>`` (a ``-`` right after the prefix marks it hashed); the original service
  and username are also kept in the credential's (encrypted) metadata as
  ``keyring_service`` / ``keyring_username``, which is how hashed names are shown.

The ``keyring-`` platform prefix is reserved for entries made through the backend.
"""

from __future__ import annotations

import hashlib
import re
from typing import Final

__all__ = [
    "PLATFORM_PREFIX",
    "TYPE_PREFIX",
    "entry_for",
    "platform_for",
    "type_for",
    "decode_platform",
    "decode_type",
    "legacy_platform",
]

PLATFORM_PREFIX: Final = "keyring-"
TYPE_PREFIX: Final = "user-"
_MAX: Final = 64
# 160 bits of sha256: collisions are out of reach; the name stays well under 64
_HASH_HEX: Final = 40
_LOWER_PLAIN: Final = frozenset("abcdefghijklmnopqrstuvwxyz0123456789")
_PLAIN: Final = _LOWER_PLAIN | frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
_ESCAPED_RE: Final = re.compile(r"(?:[A-Za-z0-9]|_[0-9a-f]{2})*")


def _escape(text: str, plain: frozenset[str]) -> str:
    return "".join(c if c in plain else "".join(f"_{b:02x}" for b in c.encode("utf-8", "surrogatepass")) for c in text)


def _unescape(escaped: str) -> str | None:
    if not _ESCAPED_RE.fullmatch(escaped):
        return None
    out = bytearray()
    i = 0
    while i < len(escaped):
        if escaped[i] == "_":
            out.append(int(escaped[i + 1 : i + 3], 16))
            i += 3
        else:
            out.append(ord(escaped[i]))
            i += 1
    try:
        return out.decode("utf-8", "surrogatepass")
    except UnicodeDecodeError:
        return None


def _encode(prefix: str, text: str, plain: frozenset[str]) -> str:
    name = prefix + _escape(text, plain)
    if len(name) <= _MAX:
        return name
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:_HASH_HEX]
    return f"{prefix}-{digest}"


def _decode(prefix: str, name: str) -> str | None:
    if not name.startswith(prefix) or name.startswith(prefix + "-"):
        return None  # not ours, or hashed (the original is in the metadata)
    return _unescape(name[len(prefix) :])


def platform_for(service: str) -> str:
    return _encode(PLATFORM_PREFIX, service, _LOWER_PLAIN)


def type_for(username: str) -> str:
    return _encode(TYPE_PREFIX, username, _PLAIN)


def entry_for(service: str, username: str) -> tuple[str, str]:
    """The agent's (platform, credential type) for a keyring (service, username)."""
    return platform_for(service), type_for(username)


def decode_platform(platform: str) -> str | None:
    """The keyring service a platform name stands for, when it can be read back from the name."""
    return _decode(PLATFORM_PREFIX, platform)


def decode_type(credential_type: str) -> str | None:
    return _decode(TYPE_PREFIX, credential_type)


def legacy_platform(platform: str) -> str | None:
    """The name a keyring platform made before case was escaped has now
    (``keyring-PyPI`` -> ``keyring-_50y_50_49``); None if ``platform`` is no such name."""
    if not platform.startswith(PLATFORM_PREFIX) or platform == platform.lower():
        return None
    service = decode_platform(platform)
    return None if service is None else platform_for(service)
