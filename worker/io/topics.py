"""`topics.yaml`: load it, check it, and make the cluster match it (create missing, report drift)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from worker.codec.json_codec import DEFAULT_MAX_MESSAGE_BYTES
from worker.codec.registry import FileSchemaRegistry, SchemaRegistry
from worker.codec.wire import AvroWire, JsonWire, WireCodec
from worker.io.schema_registry import RegistryClient, SchemaRegistryError, SubjectRegistry, subject_for

# Roles whose partition counts must agree: exec-events go to the partition number of their input.
CO_PARTITIONED_ROLES = ("decisions", "signals", "exec_events", "shadow_events")  # shadow: optional
REQUIRED_ROLES = ("decisions", "signals", "exec_events", "dlq", "strategy_mode", "harvest_health")


class WireFormat(StrEnum):
    JSON = "json"
    AVRO = "avro"


class TopicSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9._-]{1,249}$")
    partitions: int = Field(ge=1, le=10_000)
    format: WireFormat = WireFormat.JSON
    value_schema: str
    replication_factor: int | None = Field(default=None, ge=1)
    config: dict[str, str] = Field(default_factory=dict)


class TopicDefaults(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    replication_factor: int = Field(default=1, ge=1)


class TopicsFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    defaults: TopicDefaults = Field(default_factory=TopicDefaults)
    topics: dict[str, TopicSpec]

    @model_validator(mode="after")
    def _consistent(self) -> TopicsFile:
        missing = [role for role in REQUIRED_ROLES if role not in self.topics]
        if missing:
            raise ValueError(f"missing topic roles: {', '.join(missing)}")
        counts = {self.topics[r].partitions for r in CO_PARTITIONED_ROLES if r in self.topics}
        if len(counts) > 1:
            raise ValueError(
                "decisions, signals and exec_events must have the same number of partitions "
                "(exec-events are written to the partition number of their input)"
            )
        return self

    def role(self, role: str) -> TopicSpec:
        return self.topics[role]

    def replication_for(self, spec: TopicSpec) -> int:
        return spec.replication_factor or self.defaults.replication_factor


class TopicsConfigError(ValueError):
    pass


def write_variant(
    source: Path,
    target: Path,
    suffix: str,
    partitions: int | None = None,
    formats: dict[str, str] | None = None,
) -> TopicsFile:
    """A private copy of a topics file: every name + `.{suffix}`, optionally other partition
    counts (for the co-partitioned roles) or formats. Tests, benchmarks and chaos runs use it so
    that they never touch each other's (or production's) topics."""
    raw = yaml.safe_load(source.read_text(encoding="utf-8"))
    for role, spec in raw["topics"].items():
        spec["name"] = f"{spec['name']}.{suffix}"
        if formats and role in formats:
            spec["format"] = formats[role]
        if partitions is not None and role in (*CO_PARTITIONED_ROLES, "dlq"):
            spec["partitions"] = partitions
    target.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return load_topics(target)


def load_topics(path: Path) -> TopicsFile:
    """Reads and checks topics.yaml; raises `TopicsConfigError` saying what to fix."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TopicsConfigError(f"{path}: no such file (pass --topics PATH)") from None
    except yaml.YAMLError as exc:
        raise TopicsConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise TopicsConfigError(f"{path}: expected a mapping with `topics:` (see the shipped topics.yaml)")
    try:
        return TopicsFile.model_validate(raw)
    except ValidationError as exc:
        raise TopicsConfigError(f"{path}: {exc}") from None


@dataclass(frozen=True, slots=True)
class TopicReport:
    name: str
    action: str  # "created", "ok", "drift"
    details: tuple[str, ...] = ()


async def apply_topics(
    admin: AIOKafkaAdminClient, topics: TopicsFile, replication_override: int | None = None
) -> list[TopicReport]:
    """Creates missing topics; for existing ones reports any difference, never alters them."""
    existing = set(await admin.list_topics())
    reports: list[TopicReport] = []
    to_create: list[NewTopic] = []
    for spec in sorted(topics.topics.values(), key=lambda s: s.name):
        if spec.name not in existing:
            to_create.append(
                NewTopic(
                    spec.name,
                    spec.partitions,
                    replication_override or topics.replication_for(spec),
                    topic_configs=dict(spec.config),
                )
            )
            reports.append(TopicReport(spec.name, "created"))
        else:
            details = await _drift(admin, spec)
            reports.append(TopicReport(spec.name, "drift" if details else "ok", tuple(details)))
    if to_create:
        response = await admin.create_topics(to_create)
        for name, code, *rest in response.topic_errors:
            # 36 = TOPIC_ALREADY_EXISTS: another process created it in between; that is fine.
            if code in (TOPIC_AUTHORIZATION_FAILED, 31):
                raise TopicsConfigError(
                    f"creating {name} was refused (Kafka ACLs, error {code}): creating topics needs CREATE "
                    "on the cluster or the topic; run `topics apply` with an admin principal"
                )
            if code not in (0, 36):
                message = rest[0] if rest else ""
                raise TopicsConfigError(f"creating {name} failed: error {code} {message}")
    return reports


async def _drift(admin: AIOKafkaAdminClient, spec: TopicSpec) -> list[str]:
    details: list[str] = []
    described = await admin.describe_topics([spec.name])
    partitions = len(described[0]["partitions"])
    if partitions != spec.partitions:
        details.append(f"partitions: cluster has {partitions}, topics.yaml says {spec.partitions}")
    if spec.config:
        actual = await _topic_config(admin, spec.name)
        for key, wanted in sorted(spec.config.items()):
            have = actual.get(key)
            if have != wanted:
                details.append(f"{key}: cluster has {have!r}, topics.yaml says {wanted!r}")
    return details


async def _topic_config(admin: AIOKafkaAdminClient, name: str) -> Mapping[str, str]:
    responses = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, name)])
    result: dict[str, str] = {}
    for response in responses:
        obj: dict[str, Any] = response.to_object()
        for resource in obj["resources"]:
            for entry in resource["config_entries"]:
                result[entry["config_names"]] = entry["config_value"]
    return result


TOPIC_AUTHORIZATION_FAILED = 29


def codec_for(spec: TopicSpec, schemas_dir: Path, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> WireCodec:
    """The wire codec a topic's `format` asks for (Avro ids come from schemas/registry.json)."""
    if spec.format is WireFormat.JSON:
        return JsonWire(max_bytes)
    registry_path = schemas_dir / "registry.json"
    if not registry_path.exists():
        raise TopicsConfigError(f"{spec.name} is Avro but {registry_path} does not exist (--schemas-dir)")
    local = FileSchemaRegistry(registry_path)
    # With $SCHEMA_REGISTRY_URL the ids are the registry's (subject `<topic>-value`); else the file's.
    client = RegistryClient.from_env()
    registry: SchemaRegistry = local if client is None else SubjectRegistry(client, subject_for(spec.name), local)
    try:
        return AvroWire(registry, spec.value_schema, max_bytes)
    except KeyError as exc:
        raise TopicsConfigError(f"{spec.name}: {exc.args[0]}") from None
    except SchemaRegistryError as exc:
        raise TopicsConfigError(f"{spec.name}: {exc}") from None


async def check_cluster_topics(admin: AIOKafkaAdminClient, topics: TopicsFile, roles: tuple[str, ...]) -> None:
    """Fails fast (TopicsConfigError) if a topic the worker needs is missing, or if the cluster's
    exec-events topic has fewer partitions than an input (co-partitioning would break)."""
    existing = set(await admin.list_topics())
    missing = [topics.role(r).name for r in roles if topics.role(r).name not in existing]
    if missing:
        # list_topics shows only what the principal may DESCRIBE: tell "refused" from "absent".
        refused = [
            t["topic"] for t in await admin.describe_topics(missing) if t["error_code"] == TOPIC_AUTHORIZATION_FAILED
        ]
        if refused:
            raise TopicsConfigError(
                f"not authorized to describe topics {', '.join(refused)} (Kafka ACLs): grant this principal "
                "DESCRIBE and READ (inputs) or WRITE (outputs) on them"
            )
        raise TopicsConfigError(f"missing topics: {', '.join(missing)}; create them with `execworker topics apply`")
    described = {
        t["topic"]: len(t["partitions"]) for t in await admin.describe_topics([topics.role(r).name for r in roles])
    }
    exec_partitions = described.get(topics.role("exec_events").name, 0)
    for role in ("decisions", "signals"):
        name = topics.role(role).name
        if role in roles and described.get(name, 0) > exec_partitions:
            raise TopicsConfigError(
                f"{name} has {described[name]} partitions but {topics.role('exec_events').name} only "
                f"{exec_partitions}: exec-events are written to their input's partition number; "
                "give exec-events at least as many partitions"
            )
