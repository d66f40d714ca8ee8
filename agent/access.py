"""Which programs may read which credentials: the config file's ``[access."PATTERN"]`` tables.

Rules of this module:
- pure: it decides, from the rules and what the kernel says of a caller, whether a
  read is allowed, needs the user's approval (``agent.approvals``) or is denied; it
  does no I/O and holds no state;
- no rule, no change: a credential no pattern matches is read as before (``allow``),
  so a config without ``[access]`` tables behaves exactly as the agent always did;
- the first table (in file order) whose pattern matches a credential is its rule;
  a pattern is one of ``agent ls``'s: ``hf*`` globs the platform, ``*/api-secret``
  the platform and type, case-insensitively; a name is made canonical as the vault's
  names are (``HF`` is ``huggingface``), and a glob matches a platform's aliases too;
- a caller is named by its executable, as the kernel gives it (``/proc/PID/exe``: a
  process cannot change it), or, for a Python interpreter, also by the script or
  ``-m module`` it runs, which comes from its command line: a process of the same user
  can rewrite that, so a rule that must hold against such code names an executable.

    [access."openai"]
    rule = "confirm"                                  # allow | confirm | deny
    [access."aws*"]
    rule = "deny"
    only = ["/usr/local/bin/aws"]                     # these callers read it without a question
"""

from __future__ import annotations

import dataclasses
import fnmatch
import os
from collections.abc import Mapping
from typing import Any, Final, Literal

from agent.transport import Peer
from agent.transport.callers import is_python
from client.errors import ConfigError
from client.names import ALIASES, CANONICAL, canonical_platform, canonical_type

__all__ = ["ACTIONS", "Rule", "parse", "rule_for", "decide", "describe_caller"]

Action = Literal["allow", "confirm", "deny"]
ACTIONS: Final = ("allow", "confirm", "deny")
MAX_RULES: Final = 1000  # a config file's tables; each read goes through them in order
_KEYS: Final = frozenset({"rule", "only"})
_GLOB: Final = frozenset("*?[")
_ALIASES_OF: Final[dict[str, tuple[str, ...]]] = {
    canonical: tuple(alias for alias, target in ALIASES.items() if target == canonical) for canonical in CANONICAL
}


@dataclasses.dataclass(frozen=True)
class Rule:
    pattern: str
    action: Action  # what a caller not in ``only`` gets
    only: tuple[str, ...] = ()  # callers that read without a question (executables, scripts, -m modules)

    def names(self) -> str:
        return f'[access."{self.pattern}"]'


def _canonical(pattern: str) -> str:
    """A name without glob characters as the vault stores it (``HF`` is ``huggingface``)."""
    platform, slash, ctype = pattern.partition("/")
    if not _GLOB & set(platform):
        platform = canonical_platform(platform)
    if slash and not _GLOB & set(ctype):
        ctype = canonical_type(ctype)
    return platform + slash + ctype


def _one(pattern: str, table: Mapping[str, Any], where: str) -> Rule:
    at = f'{where}: [access."{pattern}"]'
    unknown = set(table) - _KEYS
    if unknown:
        raise ConfigError(f"{at}: unknown key {sorted(unknown)[0]!r} (known: only, rule)")
    if not pattern or len(pattern) > 200 or not pattern.isprintable():
        raise ConfigError(f"{at}: a pattern is a credential's name or a glob such as hf* or */api-secret")
    only = table.get("only", [])
    if not isinstance(only, list) or not all(isinstance(o, str) and o for o in only):
        raise ConfigError(f"{at}: 'only' must be a list of programs (paths, or -m module)")
    for caller in only:
        if not (caller.startswith("/") or caller.startswith("-m ")):
            raise ConfigError(f"{at}: {caller!r} in 'only' must be an absolute path or -m MODULE")
    # with a list of callers, the others are denied unless the rule asks for a confirmation
    action = table.get("rule", "deny" if only else "allow")
    if action not in ACTIONS:
        raise ConfigError(f"{at}: 'rule' must be one of {', '.join(ACTIONS)}, got {action!r}")
    return Rule(_canonical(pattern), action, tuple(only))


def parse(tables: Mapping[str, Any] | None, where: str) -> tuple[Rule, ...]:
    """The ``[access."PATTERN"]`` tables of the config file at ``where``, in file order."""
    tables = tables or {}
    if len(tables) > MAX_RULES:
        raise ConfigError(f"{where}: at most {MAX_RULES} [access] tables")
    return tuple(_one(pattern, table, where) for pattern, table in tables.items())


def _matches(pattern: str, key: tuple[str, str]) -> bool:
    """``key`` (canonical) or any alias of its platform (``hf*`` matches huggingface, as ``hf``)."""
    pattern = pattern.lower()
    for platform in (key[0], *_ALIASES_OF.get(key[0], ())):
        name = f"{platform}/{key[1]}" if "/" in pattern else platform
        if fnmatch.fnmatchcase(name.lower(), pattern):
            return True
    return False


def rule_for(rules: tuple[Rule, ...], key: tuple[str, str]) -> Rule | None:
    return next((r for r in rules if _matches(r.pattern, key)), None)


def _file_id(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _listed(rule: Rule, peer: Peer) -> bool:
    # the executable by the file itself (device, inode), not by the path the caller's mount
    # namespace shows (a bind mount of another program over the listed path is not it)
    if peer.exe_id is not None and any(_file_id(o) == peer.exe_id for o in rule.only if o.startswith("/")):
        return True
    # a script or module: the interpreter's own command line says so (see the module's rules)
    return is_python(peer.exe) and peer.caller is not None and peer.caller in rule.only


def decide(rules: tuple[Rule, ...], key: tuple[str, str], peer: Peer) -> tuple[Action, Rule | None]:
    """What a read of ``key`` by ``peer`` gets, and the rule that says so (None: no rule)."""
    rule = rule_for(rules, key)
    if rule is None:
        return "allow", None
    if rule.only and _listed(rule, peer):
        return "allow", rule
    return rule.action, rule


def describe_caller(peer: Peer) -> str:
    """A caller as a message shows it: the executable, and what it says it runs."""
    exe = peer.exe or f"pid {peer.pid}"
    return f"{exe} ({peer.caller})" if peer.caller else exe
