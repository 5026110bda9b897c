"""Schema ids for the Confluent wire format, behind a seam a real schema registry can fill.

`FileSchemaRegistry` keeps every schema version ever exported in `schemas/registry.json`, ids
never reused: a reader can always decode data written with an older version. A client for a
Confluent-compatible registry would implement the same two methods.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Protocol

import fastavro


class SchemaRegistry(Protocol):
    def latest_id(self, name: str) -> int:
        """Id of the newest schema version of contract `name` (what writers use)."""
        ...

    def writer_schema(self, schema_id: int) -> Any:
        """The parsed Avro schema registered under `schema_id`; KeyError when unknown."""
        ...


def fingerprint(schema: dict[str, Any]) -> str:
    canonical = json.dumps(schema, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


class FileSchemaRegistry:
    def __init__(self, path: Path) -> None:
        self.path = path
        raw = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {"schemas": []}
        self._entries: list[dict[str, Any]] = raw["schemas"]
        self._parsed: dict[int, Any] = {}

    def latest_id(self, name: str) -> int:
        ids = [e["id"] for e in self._entries if e["name"] == name]
        if not ids:
            raise KeyError(f"no schema registered for {name}; run `execworker schemas export`")
        return int(max(ids))

    def writer_schema(self, schema_id: int) -> Any:
        if schema_id not in self._parsed:
            entry = next((e for e in self._entries if e["id"] == schema_id), None)
            if entry is None:
                raise KeyError(schema_id)
            self._parsed[schema_id] = fastavro.parse_schema(entry["schema"])
        return self._parsed[schema_id]

    def versions(self, name: str) -> list[dict[str, Any]]:
        """Every entry of contract `name` ({id, name, fingerprint, schema}), oldest first."""
        return sorted((e for e in self._entries if e["name"] == name), key=lambda e: int(e["id"]))

    def latest_schema(self, name: str) -> dict[str, Any] | None:
        entries = [e for e in self._entries if e["name"] == name]
        return max(entries, key=lambda e: e["id"])["schema"] if entries else None

    def register(self, name: str, schema: dict[str, Any]) -> tuple[int, bool]:
        """Id of `schema` under `name`, adding a new version if it differs; (id, added)."""
        for entry in self._entries:
            if entry["name"] == name and entry["fingerprint"] == fingerprint(schema):
                return entry["id"], False
        new_id = max((e["id"] for e in self._entries), default=0) + 1
        self._entries.append({"id": new_id, "name": name, "fingerprint": fingerprint(schema), "schema": schema})
        return new_id, True

    def rendered(self) -> str:
        return json.dumps({"schemas": self._entries}, indent=2, sort_keys=False) + "\n"

    def save(self) -> None:
        self.path.write_text(self.rendered(), encoding="utf-8")
