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
    "IMPORT_CONNECTIONS",
    "IMPORT_WINDOW",
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
    would shadow the team's key for good.

    The first record is stored alone (its error may be the whole agent's); the others
    go over ``IMPORT_CONNECTIONS`` connections at once, pipelined: see ``IMPORT_WINDOW``."""
    existing: set[tuple[str, str]] = set()
    if dry_run or not replace:
        existing = {(e["platform"], e["credential_type"]) for e in client.list()}
    items: list[Item | None] = []
    sends: list[tuple[int, Record]] = []  # the records to store, by their place in items
    for r in records:
        if r.source is not None and not as_local:
            reason = (
                f"a key of the team vault {r.source}, which serves it; stored here it would shadow the team's "
                "for good (--as-local stores it anyway)"
            )
            items.append(Item(r.name, "skipped", r.platform, r.credential_type, reason, r.origin))
            continue
        item = _screened(r, existing, replace=replace, validate=validate, dry_run=dry_run)
        if item is None:
            sends.append((len(items), r))
        items.append(item)
    if sends:
        (i, first), rest = sends[0], sends[1:]
        try:
            reply: Any = client.call("store", _store_args(first, validate))
        except _GLOBAL:
            raise  # nothing was stored: the whole agent's error, said once
        except errors.AgentError as e:
            reply = e
        items[i] = _stored(first, reply)
        for (i, r), reply in zip(rest, _store_all(client, [_store_args(r, validate) for _, r in rest]), strict=True):
            items[i] = _stored(r, reply)
    return [item for item in items if item is not None]


def _item(r: Record, status: Status, reason: str | None = None) -> Item:
    return Item(r.name, status, r.platform, r.credential_type, reason, r.origin)


def _screened(
    r: Record, existing: set[tuple[str, str]], *, replace: bool, validate: bool, dry_run: bool
) -> Item | None:
    """What happens to ``r`` without the agent (failed, skipped, or a dry run's answer);
    None for a record to store."""
    if r.error is not None:
        return _item(r, "failed", r.error)
    if r.skip is not None or r.platform is None or r.value is None:
        return _item(r, "skipped", r.skip or "no value")
    key = (r.platform, r.credential_type)
    if not replace and key in existing:
        return _item(r, "skipped", "already stored; kept (--no-replace)")
    if not dry_run:
        existing.add(key)  # a later record of the same name is skipped too (--no-replace)
        return None
    try:
        if validate:
            validation.check_credential(r.platform, r.value)
    except errors.InvalidCredential as e:
        return _item(r, "failed", e.message)
    status: Status = "replaced" if key in existing else "imported"
    existing.add(key)
    return _item(r, status)


def _store_args(r: Record, validate: bool) -> dict[str, Any]:
    assert r.platform is not None and r.value is not None  # screened
    # a replaced credential keeps its metadata (the record's laid over it) and expiry
    return write_args(r.platform, r.value, r.credential_type, r.metadata, validate, r.expires_at, keep=True, merge=True)


def _stored(r: Record, reply: Any) -> Item:
    if isinstance(reply, errors.AgentError):
        return _item(r, "failed", reply.message)  # an agent message never contains a value
    return _item(r, "imported" if reply.get("created") else "replaced")


# An import stores over this many connections at once. The agent answers one request of a
# connection at a time, and commits the writes that arrive together (from several
# connections) in one transaction: the connections make the groups, and a group's one
# durable commit is shared by its writes (an import of 20,000 records: 15 writes a
# transaction on average over 16 connections, 7 over 8).
IMPORT_CONNECTIONS: Final = 16
# stores each connection pipelines per round trip (call_many reads while it writes): enough
# that the agent finds the next one waiting, few because a window whose connection fails
# midway is reported failed whole (its replies are lost with it; importing again stores them)
IMPORT_WINDOW: Final = 32


def _store_all(client: Client, requests: list[dict[str, Any]]) -> list[Any]:
    """Each ``store`` request's result, or its error (an ``AgentError`` instance). A name
    always goes over the same connection, in its records' order: the last record of a
    name is the one that stays, as if they were sent one by one."""
    lanes = max(1, min(IMPORT_CONNECTIONS, -(-len(requests) // IMPORT_WINDOW)))
    by_lane: list[list[int]] = [[] for _ in range(lanes)]
    for i, args in enumerate(requests):
        by_lane[hash((args["platform"], args.get("credential_type", DEFAULT_TYPE))) % lanes].append(i)
    replies: list[Any] = [None] * len(requests)

    def run(lane: Client, picked: list[int]) -> None:
        for start in range(0, len(picked), IMPORT_WINDOW):
            window = picked[start : start + IMPORT_WINDOW]
            try:
                got = lane.call_many([("store", requests[i]) for i in window])
            except errors.AgentError as e:  # the connection failed: none of these was acknowledged
                got = [e] * len(window)
            for i, reply in zip(window, got, strict=True):
                replies[i] = reply

    if lanes == 1:
        run(client, by_lane[0])
        return replies
    import threading

    from client.sync import Client as Lane

    others = [Lane(client.path, timeout=client.timeout, autostart=False) for _ in by_lane[1:]]
    threads = [
        threading.Thread(target=run, args=(c, picked), daemon=True)
        for c, picked in zip(others, by_lane[1:], strict=True)
    ]
    try:
        for t in threads:
            t.start()
        run(client, by_lane[0])
    finally:
        for t in threads:
            t.join()
        for c in others:
            c.close()
    return replies


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
