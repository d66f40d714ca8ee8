"""Reading credentials out of sources: JSON files, ``.env`` files, environment variables.

Rules of this module:
- reading a source is all or nothing: a malformed file is refused as a whole,
  naming its line (and column for JSON), so nothing from it is stored;
- a record that is merely wrong (no value, a bad name, a value failing its rule)
  becomes a ``Record`` with its reason (``skip`` or ``error``) and never stops the others;
- no message, label or ``repr`` contains a value: records are named by names that
  passed ``check_name``, by variable names, or by position ("entry 3");
- no I/O but reading the file named, and no agent: ``client.migrate`` stores what is read.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from client import errors, validation
from client.dotenv import SourceError, parse_dotenv
from client.protocol import MAX_NAME
from client.validation import DEFAULT_TYPE
from client.variables import EXEC_GUARD, KNOWN_VARIABLES

__all__ = [
    "MAX_SOURCE",
    "KNOWN_VARIABLES",
    "EXEC_GUARD",
    "VALUE_KEYS",
    "SourceError",
    "Record",
    "read_source",
    "decode_source",
    "parse_json",
    "parse_dotenv",
    "records_from_json",
    "records_from_dotenv",
    "records_from_env",
    "variable_for",
    "valid_variable",
]

# A credentials file is a few KiB; the limit only bounds a wrong file (a dataset, /dev/zero).
MAX_SOURCE: Final = 16 * 1024 * 1024
# KNOWN_VARIABLES and EXEC_GUARD live in client.variables (the CLI's help names them)

VALUE_KEYS: Final = ("api_key", "credential_value", "value", "token")
_VAR_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# what environment variable names look like; only these are echoed back from a file
_ENV_NAME_RE: Final = re.compile(r"[A-Z_][A-Z0-9_]{0,63}")


@dataclasses.dataclass(frozen=True)
class Record:
    """One credential read from a source, or the reason it cannot be imported."""

    name: str  # the item's name in results and summaries: never a value
    platform: str | None = None
    credential_type: str = DEFAULT_TYPE
    value: str | None = dataclasses.field(default=None, repr=False)
    metadata: dict[str, Any] | None = None
    expires_at: float | None = None
    origin: str | None = None  # where it came from: a variable, a line
    skip: str | None = None  # set: nothing to import, for this reason
    error: str | None = None  # set: cannot be imported, for this reason
    source: str | None = None  # the team vault it was exported from (`agent export --include-team`)


# --- reading ------------------------------------------------------------------------
def read_source(path: str | Path) -> str:
    """The text of a file, or ``SourceError`` saying plainly why not."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_SOURCE + 1)
    except OSError as e:
        raise SourceError(f"cannot read {path}: {e.strerror or type(e).__name__}") from None
    if len(data) > MAX_SOURCE:
        raise SourceError(f"{path} is larger than {MAX_SOURCE // (1024 * 1024)} MiB; not a credentials file")
    return decode_source(data, str(path))


def decode_source(data: bytes, label: str) -> str:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise SourceError(f"{label} is not UTF-8 text (bad byte at offset {e.start}); nothing was imported") from None
    if not text.strip():
        raise SourceError(f"{label} is empty; nothing to import")
    return text


def parse_json(text: str, label: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        # e.msg is a fixed phrase ("Expecting ',' delimiter"): it never quotes the document
        raise SourceError(
            f"{label} is not valid JSON: {e.msg.removesuffix(' at')} at line {e.lineno}, column {e.colno}; "
            "nothing was imported"
        ) from None
    except RecursionError:
        raise SourceError(f"{label} is nested too deeply to be a credentials file; nothing was imported") from None


# --- records from each kind of source --------------------------------------------------
def _name_ok(name: object, what: str = "platform") -> str | None:
    """``None`` if ``name`` is a legal name, else the rule it breaks (never the name itself)."""
    try:
        validation.check_name(name, what)
    except errors.BadRequest as e:
        return e.message
    return None


def _shown(name: str) -> str:
    """A name that failed ``check_name``, quoted for a message if it reads as a name
    (short, printable, no '=' of a pasted assignment); else a note that it is not shown."""
    if len(name) <= MAX_NAME and name.isprintable() and "=" not in name:
        return json.dumps(name, ensure_ascii=False)
    return "the name (not shown: it does not look like one)"


def _expiry(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        when = datetime.datetime.fromisoformat(value)
        if when.tzinfo is None:
            when = when.replace(tzinfo=datetime.UTC)
        return when.timestamp()
    raise ValueError("not a time")


def _record(key: object, record: object, position: str, *, from_list: bool) -> Record:
    """One JSON entry: ``key`` is its object key (or its ``platform`` field in a list)."""
    if not isinstance(key, str):
        why = 'no "platform" field' if key is None else 'the "platform" field must be a string'
        return Record(position, error=why if from_list else "invalid platform name")
    platform, sep, ctype = key.partition(":")  # "runpod:token", as `agent export` writes
    if (problem := _name_ok(platform)) or (sep and (problem := _name_ok(ctype, "credential type"))):
        return Record(position, error=f"{_shown(key)}: {problem}")
    name = platform if from_list else key
    if record is None:
        return Record(name, platform, skip="no value (null)")
    if isinstance(record, str):
        if not record:
            return Record(name, platform, skip="empty value")
        return Record(name, platform, ctype or DEFAULT_TYPE, record)
    if not isinstance(record, dict):
        return Record(name, platform, error="must be a string or an object")
    found = [k for k in VALUE_KEYS if record.get(k) is not None]
    ctype_field = record.get("credential_type")
    if ctype_field is not None:
        if (problem := _name_ok(ctype_field, "credential type")) or (sep and ctype_field != ctype):
            return Record(name, platform, error=problem or f'credential_type differs from the name "{key}"')
        ctype = str(ctype_field)
    ctype = ctype or DEFAULT_TYPE
    if not found:
        return Record(name, platform, ctype, skip=f"no value (expected one of {', '.join(VALUE_KEYS)})")
    if not all(isinstance(record[k], str) for k in found):
        return Record(name, platform, ctype, error=f'"{found[0]}" must be a string')
    if len({record[k] for k in found}) > 1:
        return Record(name, platform, ctype, error=f"several different values ({', '.join(found)}); keep one")
    value: str = record[found[0]]
    if not value:
        return Record(name, platform, ctype, skip="empty value")
    metadata = record.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        return Record(name, platform, ctype, error='"metadata" must be an object')
    try:
        expires = _expiry(record.get("expires_at"))
    except (ValueError, OverflowError, OSError):
        return Record(name, platform, ctype, error='"expires_at" must be a number (epoch seconds) or an ISO 8601 time')
    source = record.get("source")
    team = source if isinstance(source, str) and source != "local" else None
    return Record(name, platform, ctype, value, metadata, expires, source=team)


def records_from_json(data: Any, label: str) -> list[Record]:
    """``{platform: value}``, ``{platform: {api_key|credential_value|value|token, metadata,
    credential_type}}``, or a list of such records each with a ``platform`` field."""
    if isinstance(data, dict):
        return [_record(k, r, f"entry {i}", from_list=False) for i, (k, r) in enumerate(data.items(), 1)]
    if isinstance(data, list):
        return [
            _record(r.get("platform") if isinstance(r, dict) else None, r, f"record {i}", from_list=True)
            if isinstance(r, dict)
            else Record(f"record {i}", error="a record must be an object")
            for i, r in enumerate(data, 1)
        ]
    raise SourceError(
        f'{label}: the JSON must be an object {{"platform": value or record}} or a list of records '
        'with a "platform" field; nothing was imported'
    )


def _by_variable(
    found: Mapping[str, tuple[str, str | None]], mapping: Mapping[str, str], source: str, explicit: Iterable[str] = ()
) -> list[Record]:
    """Records from ``{var: (origin, value or None if unset)}`` and ``{var: platform}``;
    one per platform: the first variable (in ``mapping`` order) with a value wins."""
    out: list[Record] = []
    taken: dict[str, str] = {}
    explicit = set(explicit)
    for var, platform in mapping.items():
        origin, value = found.get(var, (var, None))
        if value is None:
            if var in explicit:
                out.append(Record(platform, platform, origin=var, error=f"{var} is not set"))
            continue
        if not value:
            out.append(Record(platform, platform, origin=origin, skip=f"{var} is empty"))
        elif platform in taken:
            why = f"{platform} already comes from {taken[platform]}"
            out.append(Record(platform, platform, origin=origin, skip=why))
        else:
            taken[platform] = var
            out.append(Record(platform, platform, value=value, origin=origin, metadata={"source": f"{source}{var}"}))
    return out


def records_from_dotenv(
    assignments: Sequence[tuple[str, str, int]], extra: Mapping[str, str], path: str
) -> list[Record]:
    """``extra`` ({VAR: platform}, from ``--map``) comes first, then ``KNOWN_VARIABLES``;
    a variable neither names is skipped, saying how to map it."""
    mapping = {**extra, **{k: v for k, v in KNOWN_VARIABLES.items() if k not in extra}}
    lines = {name: line for name, _, line in assignments}  # a later assignment wins, as in a shell
    found = {name: (f"{name} (line {lines[name]})", value) for name, value, _ in assignments}
    out = _by_variable(found, mapping, f"dotenv:{path}:", explicit=extra)
    values = {name: value for name, value, _ in assignments}
    for name, line in lines.items():
        if name in mapping:
            continue
        if _ENV_NAME_RE.fullmatch(name) and values[name]:
            out.append(
                Record(name, origin=f"line {line}", skip=f"not a known key variable; map it with --map {name}=PLATFORM")
            )
        else:
            # not shaped like a variable name (a pasted key ending in '=' parses as NAME=):
            # the "name" may itself be a secret, so it is never shown
            out.append(
                Record(
                    f"line {line}",
                    origin=f"line {line}",
                    skip="not a known key variable (name not shown: it does not look like one)",
                )
            )
    return out


def records_from_env(environ: Mapping[str, str], pairs: Sequence[tuple[str, str]] | None = None) -> list[Record]:
    """``pairs`` of (platform, VAR); ``None`` means every known variable that is set."""
    if pairs is None:
        found = {k: (k, environ[k]) for k in KNOWN_VARIABLES if k in environ}
        return _by_variable(found, KNOWN_VARIABLES, "env:")
    out: list[Record] = []
    for platform, var in pairs:
        if problem := _name_ok(platform):
            out.append(Record(platform, error=problem))
            continue
        value = environ.get(var)
        if value is None:
            hint = f" (did you mean {var}={platform}?)" if platform in environ else ""
            out.append(Record(platform, platform, origin=var, error=f"{var} is not set{hint}"))
        elif not value:
            out.append(Record(platform, platform, origin=var, error=f"{var} is empty"))
        else:
            out.append(Record(platform, platform, value=value, origin=var, metadata={"source": f"env:{var}"}))
    return out


def variable_for(platform: str, credential_type: str = DEFAULT_TYPE) -> str:
    """The variable programs read a platform's key from: HF_TOKEN for huggingface,
    WANDB_API_KEY for wandb, ..., else ``<PLATFORM>_API_KEY``; another type names
    its own (``runpod``, ``api-secret`` -> RUNPOD_API_SECRET)."""
    if credential_type == DEFAULT_TYPE:
        canonical = validation.canonical_platform(platform)
        for var, name in KNOWN_VARIABLES.items():
            if name == canonical:
                return var
    return re.sub(r"[^A-Z0-9_]", "_", f"{platform}_{credential_type}".upper())


def valid_variable(name: str) -> bool:
    return _VAR_RE.fullmatch(name) is not None
