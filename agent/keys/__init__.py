"""Where the master key lives: the ``KeySource`` protocol and the sources by name.

A vault records the name of its key source (``meta["key_source"]``, one of
``client.protocol.KEY_SOURCES``). The agent's state asks the source to create the
key's home at ``init``, to ``open`` it at unlock, to ``rewrap`` a new key at
rotation and to ``tidy`` what an interrupted rotation left; it never branches on a
source's name. A source keeps what it needs in the vault's meta through ``Meta``.

Rules of every source:
- the master key never reaches a log, a message or a repr;
- a source's failures are typed errors (``BadPassphrase``, ``KeystoreUnavailable``)
  whose messages say what to do;
- ``tests/contracts/test_key_source_contract.py`` is the suite each source must pass.

This package's own import is light (``client.errors`` alone): ``agent.keys.early`` is
imported before anything else in a new agent, and forks what reads a key as it loads.
"""

from __future__ import annotations

from client import errors

TYPE_CHECKING = False
if TYPE_CHECKING:
    from agent.keys.base import KeySource, Meta

__all__ = ["KeySource", "Meta", "implementations", "source_for", "check_choice", "default_choice"]


def implementations() -> dict[str, type[KeySource]]:
    """Each source by its name in ``protocol.KEY_SOURCES`` (a test checks they match).

    Imported when asked: neither module imports its foreign library at import time."""
    from agent.keys import keyring, passphrase

    return {cls.name: cls for cls in (keyring.KeyringSource, passphrase.PassphraseSource)}


def source_for(name: str, meta: Meta, deadline: float) -> KeySource:
    try:
        cls = implementations()[name]
    except KeyError:
        raise errors.IntegrityError(f"the vault names an unknown key source {name!r}") from None
    return cls(meta, deadline)


def check_choice(name: str | None, passphrase: str | None) -> None:
    """``init``'s arguments, before anything is created."""
    if name is None:
        return
    from client import protocol

    if name not in protocol.KEY_SOURCES:
        raise errors.BadRequest("key_source must be " + " or ".join(repr(s) for s in protocol.KEY_SOURCES))
    if implementations()[name].needs_passphrase and not passphrase:
        raise errors.BadRequest(f"a {name} key source needs a non-empty passphrase")


async def default_choice(passphrase: str | None, deadline: float) -> str:
    """``init`` without a key source: the passphrase when one is given, else the OS
    keystore when a real round trip through it works (else its error)."""
    from agent.keys import keyring
    from agent.keys import passphrase as passphrase_source

    if passphrase:
        return passphrase_source.PassphraseSource.name
    await keyring.probe(deadline)
    return keyring.KeyringSource.name
