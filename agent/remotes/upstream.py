"""A team vault's names as the agent serves them: upstream secret names and their keys
through ``client.names``' canonical names, as local names are; what cannot be served,
and why.

Rules of this module:
- pure: no I/O, and names only, never a value (names are not secrets, but they come from
  whoever may write the mount: they are escaped wherever they are shown);
- an upstream secret is served under ``canonical_platform(name)`` (``OpenAI`` is
  ``openai``, ``hf`` is ``huggingface``), a key inside it under ``canonical_type(key)``
  (``API_KEY`` is ``api-key``);
- two upstream names with one canonical name are a collision: the one spelled exactly
  as the canonical name is served, since it is the one ``set --remote`` writes and a
  newcomer such as ``hf`` beside ``huggingface`` must not take the served key away;
  where no name is spelled so, none is served (which one was meant cannot be known);
  both cases are reported;
- a name the agent cannot use (a space, a folder, characters outside its names) is
  skipped and reported with why, never silently.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import Final

from client import errors
from client.names import canonical_platform, canonical_type
from client.protocol import MAX_NAME
from client.validation import check_name

__all__ = ["Names", "EMPTY", "platforms", "types", "why_unusable", "MAX_SHOWN"]

MAX_SHOWN: Final = 50  # problems listed by name in status (all are counted): a reply stays small


@dataclasses.dataclass(frozen=True)
class Names:
    """What one set of upstream names gives: the names served, and the problems."""

    served: dict[str, str]  # the agent's name -> the upstream name it reads
    unusable: dict[str, str]  # upstream name -> why the agent cannot serve it
    collisions: dict[str, tuple[str, ...]]  # the agent's name -> the upstream names that all mean it

    def problems(self, within: str = "") -> dict[str, str]:
        """Every problem as upstream name -> why, names prefixed with ``within`` (``openai/``)."""
        out = {f"{within}{name}": why for name, why in self.unusable.items()}
        for name, spellings in self.collisions.items():
            served = self.served.get(name)
            for spelling in spellings:
                others = ", ".join(repr(s) for s in spellings if s != spelling)
                if spelling == served:
                    why = f"served as {name}; also spelled {others} upstream, which is not served"
                elif served is not None:
                    why = f"means {name}, as {served!r} does, which is the one served: rename or remove this one"
                else:
                    why = f"means {name}, as {others} does: neither is served until one is renamed or removed"
                out[f"{within}{spelling}"] = why
        return out


EMPTY: Final = Names({}, {}, {})


def why_unusable(name: str, what: str = "name") -> str | None:
    """Why the agent cannot serve ``name`` (canonical already), or None if it can."""
    try:
        check_name(name, what)
    except errors.BadRequest:
        pass
    else:
        return None
    if not name:
        return "an empty name"
    if any(ch.isspace() for ch in name):
        return "a space or other whitespace in the name"
    if len(name) > MAX_NAME:
        return f"longer than {MAX_NAME} characters"
    return "characters other than ASCII letters, digits, '-' and '_'"


def _resolve(names: Iterable[str], canonical: Callable[[str], str], what: str) -> Names:
    spellings: dict[str, list[str]] = {}
    unusable: dict[str, str] = {}
    for name in names:
        mine = canonical(name)
        why = why_unusable(mine, what)
        if why is not None:
            unusable[name] = why
        else:
            spellings.setdefault(mine, []).append(name)
    served: dict[str, str] = {}
    collisions: dict[str, tuple[str, ...]] = {}
    for mine, found in spellings.items():
        if len(found) == 1:
            served[mine] = found[0]
            continue
        collisions[mine] = tuple(sorted(found))
        if mine in found:  # spelled exactly as the agent's name: the one `set --remote` writes
            served[mine] = mine
    return Names(served, unusable, collisions)


def platforms(listed: Iterable[str]) -> Names:
    """A listing's names: the secrets directly under the prefix; a folder is reported."""
    secrets, folders = [], {}
    for name in listed:
        if name.endswith("/"):
            folders[name] = "a folder: the agent reads the secrets directly under the prefix, not below"
        else:
            secrets.append(name)
    names = _resolve(secrets, canonical_platform, "platform")
    return dataclasses.replace(names, unusable={**names.unusable, **folders})


def types(keys: Iterable[str]) -> Names:
    """One secret's keys, the credential types."""
    return _resolve(keys, canonical_type, "credential type")
