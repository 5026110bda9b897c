"""A Confluent-compatible schema registry (REST), used when `SCHEMA_REGISTRY_URL` is set.

Subjects follow Confluent's TopicNameStrategy: the value schema of topic T is subject `T-value`,
so a consumer with Confluent's own deserializer (which only looks the id up) and one with ours
agree on every id. Endpoints used:

- `POST /subjects/{subject}/versions` `{"schema": ...}` registers (idempotent: an identical
  schema returns its existing id) — `execworker schemas export --register`.
- `POST /subjects/{subject}` `{"schema": ...}` looks the id of a schema up under a subject
  (404 if it was never registered) — what a writer uses.
- `GET /schemas/ids/{id}` — the writer schema of a message being decoded; cached.

Basic auth (Confluent Cloud's API key and secret) from `SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO`
(`key:secret`), never logged. The calls are synchronous (urllib): the writer's id is looked up
once when the codec is built; an id never seen before costs one request, then it is cached.
"""

from __future__ import annotations

import base64
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import Any

import fastavro

from worker.codec.registry import FileSchemaRegistry
from worker.io.kafka_security import Secret

URL_ENV = "SCHEMA_REGISTRY_URL"
USER_INFO_ENV = "SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO"
CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"


class SchemaRegistryError(RuntimeError):
    """The registry refused or could not be reached; the message says what to do."""


def subject_for(topic: str) -> str:
    """Confluent's TopicNameStrategy for message values."""
    return f"{topic}-value"


class RegistryClient:
    def __init__(self, url: str, user_info: Secret | None = None, timeout_s: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self._auth = user_info
        self.timeout_s = timeout_s
        self._schemas: dict[int, Any] = {}

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> RegistryClient | None:
        source = os.environ if env is None else env
        url = source.get(URL_ENV, "").strip()
        if not url:
            return None
        info = source.get(USER_INFO_ENV, "").strip()
        return cls(url, Secret(info) if info else None)

    def __repr__(self) -> str:
        return f"RegistryClient({self.url!r})"

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        request = urllib.request.Request(
            self.url + path,
            method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Content-Type": CONTENT_TYPE, "Accept": CONTENT_TYPE},
        )
        if self._auth is not None:
            token = base64.b64encode(self._auth.reveal().encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
            return json.loads(response.read() or b"null")

    def _failure(self, exc: Exception, doing: str) -> SchemaRegistryError:
        if isinstance(exc, urllib.error.HTTPError):
            detail = _error_message(exc)
            if exc.code in (401, 403):
                return SchemaRegistryError(
                    f"schema registry {self.url} refused {doing} ({exc.code} {detail}): check ${USER_INFO_ENV}"
                )
            return SchemaRegistryError(f"schema registry {self.url}: {doing} failed ({exc.code} {detail})")
        return SchemaRegistryError(
            f"schema registry {self.url} is unreachable while {doing} ({exc}); fix ${URL_ENV} or unset it"
        )

    def register(self, subject: str, schema: dict[str, Any]) -> int:
        """Registers `schema` under `subject` (idempotent); its global id."""
        path = f"/subjects/{urllib.parse.quote(subject, safe='')}/versions"
        try:
            answer = self._request("POST", path, {"schema": json.dumps(schema)})
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise self._failure(exc, f"registering {subject}") from None
        return int(answer["id"])

    def lookup(self, subject: str, schema: dict[str, Any]) -> int:
        """The id `schema` has under `subject`; SchemaRegistryError if it is not registered there."""
        path = f"/subjects/{urllib.parse.quote(subject, safe='')}"
        try:
            answer = self._request("POST", path, {"schema": json.dumps(schema)})
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                raise SchemaRegistryError(
                    f"schema registry {self.url} has no such schema under subject {subject}: "
                    "register it with `execworker schemas export --register`"
                ) from None
            raise self._failure(exc, f"looking {subject} up") from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise self._failure(exc, f"looking {subject} up") from None
        return int(answer["id"])

    def schema(self, schema_id: int) -> Any:
        """The parsed schema with this global id; KeyError if the registry does not know it."""
        if schema_id not in self._schemas:
            try:
                answer = self._request("GET", f"/schemas/ids/{schema_id}")
            except urllib.error.HTTPError as exc:
                if exc.code == 404:
                    raise KeyError(schema_id) from None
                raise self._failure(exc, f"fetching schema {schema_id}") from None
            except (urllib.error.URLError, OSError, ValueError) as exc:
                raise self._failure(exc, f"fetching schema {schema_id}") from None
            self._schemas[schema_id] = fastavro.parse_schema(json.loads(answer["schema"]))
        return self._schemas[schema_id]


class SubjectRegistry:
    """The `SchemaRegistry` seam of `AvroWire` for one topic: writes with the id the registry has
    for the contract's newest local schema under the topic's subject; decodes any id it knows."""

    def __init__(self, client: RegistryClient, subject: str, local: FileSchemaRegistry) -> None:
        self.client = client
        self.subject = subject
        self.local = local

    def latest_id(self, name: str) -> int:
        schema = self.local.latest_schema(name)
        if schema is None:
            raise KeyError(f"no schema for {name} in {self.local.path}; run `execworker schemas export`")
        return self.client.lookup(self.subject, schema)

    def writer_schema(self, schema_id: int) -> Any:
        return self.client.schema(schema_id)


def register_all(client: RegistryClient, local: FileSchemaRegistry, topics: Mapping[str, str]) -> list[str]:
    """Registers every local version of each topic's contract under `<topic>-value`, oldest first
    (so the registry's versions follow ours); {topic: contract} in, one line per version out."""
    lines = []
    for topic, contract in sorted(topics.items()):
        for entry in local.versions(contract):
            schema_id = client.register(subject_for(topic), entry["schema"])
            lines.append(f"{subject_for(topic)}: {contract} (local id {entry['id']}) -> registry id {schema_id}")
    return lines


def _error_message(exc: urllib.error.HTTPError) -> str:
    try:
        return str(json.loads(exc.read()).get("message", exc.reason))
    except (ValueError, OSError, AttributeError):
        return str(exc.reason)
