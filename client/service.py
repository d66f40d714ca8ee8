"""The original API, served by the agent: ``CredentialService`` and ``CredentialMigrationTool``.

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
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from client import errors, validation
from client._sync import Client
from client.validation import DEFAULT_TYPE

__all__ = ["CredentialService", "CredentialMigrationTool"]

log = logging.getLogger("client.service")


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.datetime.fromtimestamp(ts, datetime.UTC).isoformat()


class CredentialService:
    """Store, fetch and manage API credentials through the credential agent."""

    def __init__(self, client: Client | None = None, *, path: str | os.PathLike[str] | None = None,
                 timeout: float | None = None) -> None:
        if client is None:
            client = Client(path) if timeout is None else Client(path, timeout=timeout)
        self.client = client

    def __repr__(self) -> str:
        return f"CredentialService({self.client!r})"

    def _fail(self, action: str, platform: str, e: errors.AgentError) -> None:
        # the message of an AgentError never contains a value
        log.error("%s %s failed: %s", action, platform, e.message)

    def store_credential(self, platform: str, credential_value: str, credential_type: str = DEFAULT_TYPE,
                         metadata: dict[str, Any] | None = None) -> bool:
        try:
            self.client.store(platform, credential_value, credential_type, metadata)
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

    def update_credential(self, platform: str, credential_value: str, credential_type: str = DEFAULT_TYPE,
                          metadata: dict[str, Any] | None = None) -> bool:
        try:
            self.client.update(platform, credential_value, credential_type, metadata)
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


class CredentialMigrationTool:
    """Moves credentials from JSON files and environment variables into the agent."""

    _VALUE_KEYS = ("api_key", "credential_value", "value", "token")

    def __init__(self, service: CredentialService) -> None:
        self.service = service

    def _records(self, data: Any) -> list[tuple[str, Any]]:
        """(platform, record) pairs from the shapes people have."""
        if isinstance(data, dict):
            return list(data.items())
        if isinstance(data, list):
            return [(str(r.get("platform", "")) if isinstance(r, dict) else "", r) for r in data]
        raise ValueError("the JSON must be an object or a list of records")

    def _store_record(self, platform: str, record: Any) -> bool:
        if isinstance(record, str):
            return self.service.store_credential(platform, record)
        if not isinstance(record, dict):
            log.error("record for %s is neither a string nor an object", platform)
            return False
        value = next((record[k] for k in self._VALUE_KEYS if isinstance(record.get(k), str)), None)
        if value is None:
            log.error("record for %s has no value (one of %s)", platform, ", ".join(self._VALUE_KEYS))
            return False
        ctype = record.get("credential_type", DEFAULT_TYPE)
        metadata = record.get("metadata")
        if not isinstance(ctype, str) or (metadata is not None and not isinstance(metadata, dict)):
            log.error("record for %s has a malformed credential_type or metadata", platform)
            return False
        return self.service.store_credential(platform, value, ctype, metadata)

    def migrate_from_json(self, json_file_path: str | os.PathLike[str]) -> dict[str, bool]:
        try:
            with open(json_file_path, encoding="utf-8") as f:
                data = json.load(f)
            records = self._records(data)
        except json.JSONDecodeError as e:
            log.error("%s is not valid JSON (line %d, column %d): %s", json_file_path, e.lineno, e.colno, e.msg)
            return {}
        except (OSError, ValueError, UnicodeDecodeError) as e:
            log.error("cannot read %s: %s", json_file_path, type(e).__name__)
            return {}
        results: dict[str, bool] = {}
        for platform, record in records:
            results[platform] = self._store_record(platform, record) if platform else False
        return results

    def migrate_from_env(self, env_mapping: Mapping[str, str]) -> dict[str, bool]:
        """``{platform: ENV_VAR}``; a missing or empty variable is ``False`` for that platform."""
        results: dict[str, bool] = {}
        for platform, var in env_mapping.items():
            value = os.environ.get(var)
            if not value:
                log.error("environment variable %s for %s is not set", var, platform)
                results[platform] = False
                continue
            results[platform] = self.service.store_credential(platform, value, metadata={"source": f"env:{var}"})
        return results

    def export_to_json(self, output_path: str | os.PathLike[str], include_values: bool = False) -> bool:
        """Write every credential's record (values only when asked) to a new 0600 file, atomically."""
        try:
            entries = self.service.client.list()
            out: dict[str, Any] = {}
            for e in entries:
                record: dict[str, Any] = {
                    "credential_type": e["credential_type"],
                    "metadata": e.get("metadata") or {},
                    "created_at": _iso(e["created"]),
                    "updated_at": _iso(e["updated"]),
                    "expires_at": _iso(e["expires_at"]),
                }
                if include_values:
                    record["value"] = self.service.client.get(e["platform"], e["credential_type"])
                name = e["platform"]
                out[name if e["credential_type"] == DEFAULT_TYPE else f"{name}:{e['credential_type']}"] = record
            write_private_json(Path(output_path), out)
        except (errors.AgentError, OSError) as e:
            log.error("export to %s failed: %s", output_path, getattr(e, "message", None) or type(e).__name__)
            return False
        return True


def write_private_json(path: Path, data: Any) -> None:
    """Write ``data`` to ``path`` atomically, created 0600 from the first byte."""
    fd, tmp = tempfile.mkstemp(dir=path.parent or ".", prefix=f".{path.name}.", suffix=".tmp")  # mode 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, sort_keys=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
