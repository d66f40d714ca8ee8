"""The original API, served by the agent: ``CredentialService``, ``CredentialMigrationTool``
and ``SecureStorage``.

Existing code keeps working with only its import line changed
(``from client import CredentialService``). As before, failures return ``False``
or ``None`` and are logged, never with a value; the typed ``client.Client`` is
there for callers that want exceptions.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from client import errors, migrate, validation
from client.sync import Client
from client.validation import DEFAULT_TYPE

__all__ = ["CredentialService", "CredentialMigrationTool", "SecureStorage"]

log = logging.getLogger("client.service")


def _iso(ts: float | None) -> str | None:
    """``ts`` as ISO 8601 UTC; None for none, and for a value no date can show (NaN,
    1e300: a well-behaved agent never stores one), which is logged instead."""
    if ts is None:
        return None
    try:
        return datetime.datetime.fromtimestamp(ts, datetime.UTC).isoformat()
    except (OverflowError, OSError, ValueError, TypeError):
        log.warning("a timestamp from the agent is not a date: %r", ts)
        return None


class _ThroughAgent:
    """What both original classes are: a ``Client`` of the agent (given, or made for
    ``path`` and ``timeout``), shown by it."""

    def __init__(
        self, client: Client | None = None, *, path: str | os.PathLike[str] | None = None, timeout: float | None = None
    ) -> None:
        if client is None:
            client = Client(path) if timeout is None else Client(path, timeout=timeout)
        self.client = client

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.client!r})"


class CredentialService(_ThroughAgent):
    """Store, fetch and manage API credentials through the credential agent."""

    def _fail(self, action: str, platform: str, e: errors.AgentError) -> None:
        # the message of an AgentError never contains a value
        log.error("%s %s failed: %s", action, platform, e.message)

    def _storable(self, action: str, platform: str, value: object) -> bool:
        # As the original: the format is not checked here (``validate_credential`` does
        # that, to be called first); only an empty value is refused.
        if isinstance(value, str) and value:
            return True
        log.error("%s %s failed: the credential is empty", action, platform)
        return False

    def store_credential(
        self,
        platform: str,
        credential_value: str,
        credential_type: str = DEFAULT_TYPE,
        metadata: dict[str, Any] | None = None,
    ) -> bool:
        if not self._storable("storing the credential for", platform, credential_value):
            return False
        try:
            self.client.store(platform, credential_value, credential_type, metadata, validate=False)
        except errors.AgentError as e:
            self._fail("storing the credential for", platform, e)
            return False
        return True

    def get_credential(self, platform: str, credential_type: str = DEFAULT_TYPE) -> str | None:
        try:
            return self.client.get(platform, credential_type)
        except errors.NotFound:
            return None
        except errors.AgentError as e:
            self._fail("fetching the credential for", platform, e)
            return None

    def update_credential(
        self,
        platform: str,
        credential_value: str,
        credential_type: str = DEFAULT_TYPE,
        metadata: dict[str, Any] | None = None,
    ) -> bool:
        if not self._storable("updating the credential for", platform, credential_value):
            return False
        try:
            self.client.update(platform, credential_value, credential_type, metadata, validate=False)
        except errors.AgentError as e:
            self._fail("updating the credential for", platform, e)
            return False
        return True

    def delete_credential(self, platform: str, credential_type: str = DEFAULT_TYPE) -> bool:
        try:
            self.client.delete(platform, credential_type)
        except errors.AgentError as e:
            self._fail("deleting the credential for", platform, e)
            return False
        return True

    def list_platforms(self) -> list[str]:
        try:
            entries = self.client.list()
        except errors.AgentError as e:
            self._fail("listing", "platforms", e)
            return []
        return sorted({e["platform"] for e in entries})

    def get_credential_metadata(self, platform: str, credential_type: str = DEFAULT_TYPE) -> dict[str, Any] | None:
        """The credential's metadata plus its timestamps; never its value."""
        try:
            entry = self.client.metadata(platform, credential_type)
        except errors.NotFound:
            return None
        except errors.AgentError as e:
            self._fail("reading the metadata of", platform, e)
            return None
        return {
            "platform": entry["platform"],
            "credential_type": entry["credential_type"],
            "created_at": _iso(entry["created"]),
            "updated_at": _iso(entry["updated"]),
            "expires_at": _iso(entry["expires_at"]),
            "metadata": entry.get("metadata") or {},
        }

    def validate_credential(self, platform: str, credential_value: str) -> bool:
        """The platform's format rule, checked locally (no agent needed)."""
        try:
            validation.check_name(platform)
        except errors.BadRequest:
            return False
        return validation.is_valid_credential(platform, credential_value)


class SecureStorage(_ThroughAgent):
    """The original ``SecureStorage``: ``encrypt``/``decrypt`` run in the agent, under its
    vault's key, which never leaves it (as ssh-agent signs without handing out keys).

    Unlike the rest of the original API it raises, as the original did: ``client.Locked``,
    ``client.InvalidToken`` for a token of another vault or one altered, and the other
    ``client.AgentError``s.
    """

    def encrypt(self, data: str) -> bytes:
        return self.client.encrypt(data)

    def decrypt(self, encrypted: bytes) -> str:
        return self.client.decrypt(encrypted)


class CredentialMigrationTool:
    """Moves credentials from JSON files and environment variables into the agent.

    Results are ``{name: bool}``, one per platform (the JSON key, or the record's
    ``platform`` field; ``"record 3"`` for a record without a usable name). A bad
    record is ``False`` and logged with the reason, never the value; the others go on.
    """

    def __init__(self, service: CredentialService) -> None:
        self.service = service

    def _run(self, records: list[migrate.Record]) -> dict[str, bool]:
        try:
            items = migrate.import_records(self.service.client, records)
        except errors.AgentError as e:
            log.error("migration failed, nothing was stored: %s", e.message)
            return {r.name: False for r in records}
        results: dict[str, bool] = {}
        for item in items:
            done = item.status in ("imported", "replaced")
            if not done:
                log.error("%s", item.describe())
            results[item.name] = results.get(item.name, True) and done
        return results

    def migrate_from_json(self, json_file_path: str | os.PathLike[str]) -> dict[str, bool]:
        """Import ``{platform: value}``, ``{platform: {api_key|credential_value|value|token,
        metadata, credential_type}}`` or a list of such records with a ``platform`` field.
        A malformed file is refused whole (logged with its line and column): ``{}``."""
        label = os.fspath(json_file_path)
        try:
            records = migrate.records_from_json(migrate.parse_json(migrate.read_source(label), label), label)
        except migrate.SourceError as e:
            log.error("%s", e.message)
            return {}
        return self._run(records)

    def migrate_from_env(self, env_mapping: Mapping[str, str]) -> dict[str, bool]:
        """``{platform: ENV_VAR}``; a missing or empty variable is ``False`` for that platform."""
        return self._run(migrate.records_from_env(os.environ, list(env_mapping.items())))

    def export_to_json(self, output_path: str | os.PathLike[str], include_values: bool = False) -> bool:
        """Write every credential's record (values only when asked) to a new 0600 file, atomically."""
        items: list[migrate.Item] = []

        def records() -> Iterator[tuple[str, dict[str, Any]]]:
            for record, item in migrate.export_stream(self.service.client, include_values):
                items.append(item)
                if record is not None:
                    yield item.name, record

        try:  # written as it is fetched, a batch at a time
            write_private_text(Path(output_path), json_object_chunks(records()))
        except (errors.AgentError, OSError) as e:
            why = e.message if isinstance(e, errors.AgentError) else e.strerror or type(e).__name__
            log.error("export to %s failed: %s", output_path, why)
            return False
        for item in items:
            if item.status == "failed":
                log.error("%s", item.describe())
        return all(item.status == "exported" for item in items)


def write_private_json(path: Path, data: Any, *, replace: bool = True) -> None:
    """``data`` as JSON, written as ``write_private_text`` writes."""
    write_private_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n", replace=replace)


def json_object_chunks(pairs: Iterable[tuple[str, Any]], default: Callable[[Any], Any] | None = None) -> Iterator[str]:
    """The text ``json.dumps(dict(pairs), indent=2, sort_keys=True) + "\\n"`` gives, a pair
    at a time (``pairs`` in the order of their keys): an export written as it is fetched."""
    sep = "{\n"
    for key, value in pairs:
        member = json.dumps({key: value}, indent=2, sort_keys=True, default=default)
        yield sep + member[2:-2]  # without its own "{\n" and "\n}"
        sep = ",\n"
    yield "{}\n" if sep == "{\n" else "\n}\n"


def write_private_text(path: Path, text: str | Iterable[str], *, replace: bool = True) -> None:
    """Write ``text`` (or its chunks, as they come) to ``path`` atomically, created 0600
    from the first byte, through a temporary file in the same directory: a symlink at
    ``path`` is replaced, never followed. ``replace`` false: ``FileExistsError`` if
    anything (a link too) is there. An exception from the chunks leaves nothing behind."""
    fd, tmp = tempfile.mkstemp(dir=path.parent or ".", prefix=f".{path.name}.", suffix=".tmp")  # mode 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            if isinstance(text, str):
                f.write(text)
            else:
                f.writelines(text)
            f.flush()
            os.fsync(f.fileno())
        if replace:
            os.replace(tmp, path)
        else:
            _link_new(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _link_new(tmp: str, path: Path) -> None:
    """Put ``tmp`` at ``path`` only if nothing is there: link() never replaces nor follows
    a name; where a file system has no hard links, O_EXCL|O_NOFOLLOW does the same."""
    try:
        os.link(tmp, path, follow_symlinks=False)
    except FileExistsError:
        raise
    except OSError:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
        fd = os.open(path, flags, 0o600)
        try:
            with open(tmp, "rb") as src, os.fdopen(fd, "wb") as dst:
                dst.write(src.read())
                dst.flush()
                os.fsync(dst.fileno())
        except BaseException:
            os.unlink(path)  # ours: created above
            raise
    os.unlink(tmp)


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
