"""Moving credentials in and out of the agent: from the records ``client._sources``
reads (JSON files, ``.env`` files, environment variables), and out as JSON records.

Rules of this module:
- a record that cannot be imported becomes one failed or skipped ``Item`` and never
  stops the others; an error that concerns the whole agent (locked, no vault, no
  agent) is raised instead, if it comes before anything was stored;
- no message, label or ``repr`` contains a value: items are named as their records.

The names of ``client._sources`` are importable from here too (``migrate.parse_json``,
``migrate.Record``, ...): this module is the one the CLI and callers use.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Final, Literal

from client import errors, validation
from client._sources import (
    EXEC_GUARD,
    KNOWN_VARIABLES,
    MAX_SOURCE,
    VALUE_KEYS,
    Record,
    SourceError,
    decode_source,
    parse_dotenv,
    parse_json,
    read_source,
    records_from_dotenv,
    records_from_env,
    records_from_json,
    valid_variable,
    variable_for,
)
from client.messages import write_args
from client.validation import DEFAULT_TYPE

if TYPE_CHECKING:
    from client.sync import Client

__all__ = [
    "MAX_SOURCE",
    "KNOWN_VARIABLES",
    "EXEC_GUARD",
    "VALUE_KEYS",
    "SourceError",
    "Record",
    "Item",
    "read_source",
    "decode_source",
    "parse_json",
    "parse_dotenv",
    "records_from_json",
    "records_from_dotenv",
    "records_from_env",
    "import_records",
    "export_records",
    "export_stream",
    "record_name",
    "EXPORT_BATCH",
    "variable_for",
    "valid_variable",
    "counts",
]

Status = Literal["imported", "replaced", "skipped", "failed", "exported"]
# errors that concern the whole agent, not one record: reported once, not per item
_GLOBAL = (
    errors.Locked,
    errors.NotInitialized,
    errors.AgentUnavailable,
    errors.AgentTimeout,
    errors.KeystoreUnavailable,
    errors.ProtocolError,
)


@dataclasses.dataclass(frozen=True)
class Item:
    """What happened to one record (or would happen, in a dry run). Never carries a value."""

    name: str
    status: Status
    platform: str | None = None
    credential_type: str = DEFAULT_TYPE
    reason: str | None = None
    origin: str | None = None

    @property
    def ok(self) -> bool:
        return self.status != "failed"

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def describe(self) -> str:
        """One line for people: status, name, type, origin, reason."""
        what = self.platform or self.name
        if self.platform and self.credential_type != DEFAULT_TYPE:
            what += f" (type {self.credential_type})"
        if self.origin:
            what += f" from {self.origin}"
        return f"{self.status:<9} {what}" + (f": {self.reason}" if self.reason else "")


def counts(items: Iterable[Item]) -> dict[str, int]:
    out = dict.fromkeys(("imported", "replaced", "skipped", "failed", "exported"), 0)
    for item in items:
        out[item.status] += 1
    return out


# --- into and out of the agent -----------------------------------------------------------
def import_records(
    client: Client,
    records: Sequence[Record],
    *,
    replace: bool = True,
    validate: bool = True,
    dry_run: bool = False,
    as_local: bool = False,
) -> list[Item]:
    """Store each record; one item per record. An error that concerns the whole agent
    (locked, no vault, no agent) is raised if it comes before anything was stored.
    A record exported from a team vault is skipped unless ``as_local``: stored here, it
    would shadow the team's key for good."""
    existing: set[tuple[str, str]] = set()
    if dry_run or not replace:
        existing = {(e["platform"], e["credential_type"]) for e in client.list()}
    items: list[Item] = []
    stored = False
    for r in records:
        if r.source is not None and not as_local:
            reason = (
                f"a key of the team vault {r.source}, which serves it; stored here it would shadow the team's "
                "for good (--as-local stores it anyway)"
            )
            items.append(Item(r.name, "skipped", r.platform, r.credential_type, reason, r.origin))
            continue
        item = _import_one(
            client, r, existing, replace=replace, validate=validate, dry_run=dry_run, raise_global=not stored
        )
        stored = stored or item.status in ("imported", "replaced")
        items.append(item)
    return items


def _import_one(
    client: Client,
    r: Record,
    existing: set[tuple[str, str]],
    *,
    replace: bool,
    validate: bool,
    dry_run: bool,
    raise_global: bool,
) -> Item:
    def item(status: Status, reason: str | None = None) -> Item:
        return Item(r.name, status, r.platform, r.credential_type, reason, r.origin)

    if r.error is not None:
        return item("failed", r.error)
    if r.skip is not None or r.platform is None or r.value is None:
        return item("skipped", r.skip or "no value")
    key = (r.platform, r.credential_type)
    if not replace and key in existing:
        return item("skipped", "already stored; kept (--no-replace)")
    if dry_run:
        try:
            if validate:
                validation.check_credential(r.platform, r.value)
        except errors.InvalidCredential as e:
            return item("failed", e.message)
        status: Status = "replaced" if key in existing else "imported"
        existing.add(key)
        return item(status)
    try:
        # a replaced credential keeps its metadata (the record's laid over it) and expiry
        result = client.call(
            "store",
            write_args(
                r.platform, r.value, r.credential_type, r.metadata, validate, r.expires_at, keep=True, merge=True
            ),
        )
    except _GLOBAL as e:
        if raise_global:
            raise
        return item("failed", e.message)
    except errors.AgentError as e:
        return item("failed", e.message)  # an agent message never contains a value
    existing.add(key)
    return item("imported" if result.get("created") else "replaced")


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.datetime.fromtimestamp(ts, datetime.UTC).isoformat()


# credentials whose metadata (and value) one pipelined batch of an export fetches: what
# an export holds at once, however many credentials there are
EXPORT_BATCH: Final = 1_000


def record_name(platform: str, credential_type: str) -> str:
    """The key of a credential's record in an export: ``platform`` or ``platform:type``."""
    return platform if credential_type == DEFAULT_TYPE else f"{platform}:{credential_type}"


def export_stream(
    client: Client, include_values: bool = False, include_team: bool = False, include_history: bool = False
) -> Iterator[tuple[dict[str, Any] | None, Item]]:
    """``export_records`` a batch at a time: each credential's record (None for one that
    failed or was skipped) and item, in the order of their names (the order of an
    export file's keys), the values of ``EXPORT_BATCH`` credentials fetched per round
    trip. An error that concerns the whole agent is raised when its batch comes."""
    listed = client.list()
    team = {(e["platform"], e["credential_type"]): e["source"] for e in listed if e.get("source", "local") != "local"}
    chosen = sorted(
        (
            (record_name(e["platform"], e["credential_type"]), e)
            for e in listed
            if include_team or (e["platform"], e["credential_type"]) not in team
        ),
        key=lambda named: named[0],
    )
    del listed
    for start in range(0, len(chosen), EXPORT_BATCH):
        batch = chosen[start : start + EXPORT_BATCH]
        names = [{"platform": e["platform"], "credential_type": e["credential_type"]} for _, e in batch]
        # the listing holds each entry's metadata while the agent is unlocked; an entry
        # without (one that fails its integrity check) is asked for, to report its error
        asked = [i for i, (_, e) in enumerate(batch) if e.get("metadata") is None]
        requests = [("metadata", names[i]) for i in asked] + ([("get", a) for a in names] if include_values else [])
        replies = client.call_many(requests) if requests else []
        for reply in replies:
            if isinstance(reply, _GLOBAL):
                raise reply
        metas: list[Any] = [e for _, e in batch]
        for i, reply in zip(asked, replies, strict=False):
            metas[i] = reply
        values = replies[len(asked) :] if include_values else [None] * len(batch)
        for (name, _), a, meta, value in zip(batch, names, metas, values, strict=True):
            platform, ctype = a["platform"], a["credential_type"]
            source = team.get((platform, ctype))
            record, item = _exported(name, platform, ctype, meta, value, include_values, source)
            if record is not None and source is None and include_history:
                record["history"] = _history(client, platform, ctype, include_values)
            yield record, item
    if not include_team:
        for (platform, ctype), remote in sorted(team.items()):
            why = f"a key of the team vault {remote}: left out (--include-team exports it, marked)"
            yield None, Item(record_name(platform, ctype), "skipped", platform, ctype, why)


def _exported(
    name: str, platform: str, ctype: str, meta: Any, value: Any, include_values: bool, source: str | None
) -> tuple[dict[str, Any] | None, Item]:
    problem = meta if isinstance(meta, errors.AgentError) else value
    if isinstance(problem, errors.AgentError):
        return None, Item(platform, "failed", platform, ctype, problem.message)
    record: dict[str, Any] = {
        "platform": platform,
        "credential_type": ctype,
        "metadata": meta.get("metadata") or {},
        "created_at": _iso(meta["created"]),
        "updated_at": _iso(meta["updated"]),
        "expires_at": _iso(meta["expires_at"]),
    }
    if include_values:
        record["value"] = value
    if source is not None:
        record["source"] = source
    return record, Item(name, "exported", platform, ctype)


def _history(client: Client, platform: str, ctype: str, include_values: bool) -> list[dict[str, Any]]:
    """One credential's previous values for its export record, newest first."""
    rows = client.history(platform, ctype)
    args = {"platform": platform, "credential_type": ctype}
    olds = (
        client.call_many([("history_value", {**args, "version": r["version"]}) for r in rows]) if include_values else []
    )
    kept = []
    for i, r in enumerate(rows):
        old: dict[str, Any] = {
            "version": r["version"],
            "set_at": _iso(r["set_at"]),
            "replaced_at": _iso(r["replaced"]),
            "reason": r["reason"],
        }
        if include_values:
            reply = olds[i]
            if isinstance(reply, errors.AgentError):
                raise reply
            old.update(value=reply["value"], metadata=reply["metadata"], expires_at=_iso(reply["expires_at"]))
        kept.append(old)
    return kept


def export_records(
    client: Client, include_values: bool = False, include_team: bool = False, include_history: bool = False
) -> tuple[dict[str, Any], list[Item]]:
    """Every credential's record, keyed ``platform`` or ``platform:type`` (the shape
    ``records_from_json`` reads back), and one item per credential. A team vault's keys
    are left out unless ``include_team``, and then marked with their ``source``. With
    ``include_history``, a local credential's record lists its previous values under
    ``history`` (newest first; their values only with ``include_values``).
    ``export_stream`` gives the same a batch at a time."""
    data: dict[str, Any] = {}
    items: list[Item] = []
    for record, item in export_stream(client, include_values, include_team, include_history):
        if record is not None:
            data[item.name] = record
        items.append(item)
    return data, items
