"""The inputs of a replay of every role, read, decoded and merged into one order.

Roles (the topics file's names): the inputs `decisions` and `signals`, and the control records
`strategy_mode`, `harvest_health` and `market`. They come from a deployment's topics
(`replay --from-topics`: every role of the topics file, each decoded with its role's codec, JSON
or Avro) or from files (`--from-file ROLE=PATH`: JSONL, or an Avro object container `.avro`).

The merge order (the order the replay applies records in; docs/architecture.md, "Replay of every
input"), by key:

  * an input:   (event_ts_ms, 1, symbol, role rank, position among its symbol's records of its role)
  * a control:  (event time,  0, "",     role rank, partition, offset)

where the event time of a control record is `event_time_ms` for `market.v1` and `ts_ms` for
`strategy-mode.v1` and `harvest-health.v1`; the role rank is the order of `ROLES`; a position
counts records in (partition, offset) order (a file is partition 0, offset = its record number).
So control records apply by event time, before the inputs of the same millisecond; decisions come
before signals of the same symbol and millisecond. For decisions alone the key is today's
canonical order (event time, symbol, per-symbol position): digests of decision replays do not
change. Each input carries the partition it was read from (0 for files): the replay keeps one
policy state (modes per symbol, rate wall, adaptive factor) per input partition, as the live
worker does per owned partition.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

from pydantic import BaseModel

from worker.codec.errors import DecodeError
from worker.codec.wire import JsonWire, WireCodec
from worker.contract.messages import Decision, HarvestHealth, MarketSnapshot, Signal, StrategyModeCommand
from worker.runtime.replay import read_input_file

if TYPE_CHECKING:
    from worker.io.kafka import KafkaConfig
    from worker.io.topics import TopicsFile

INPUT_ROLES = ("decisions", "signals")
CONTROL_ROLES = ("strategy_mode", "harvest_health", "market")
ROLES = INPUT_ROLES + CONTROL_ROLES
# Compacted state topics: read whole (like the live worker at start), even with --from-ts.
STATE_ROLES = ("strategy_mode", "harvest_health")

Message: TypeAlias = Decision | Signal | StrategyModeCommand | HarvestHealth | MarketSnapshot
MODELS: dict[str, type[BaseModel]] = {
    "decisions": Decision,
    "signals": Signal,
    "strategy_mode": StrategyModeCommand,
    "harvest_health": HarvestHealth,
    "market": MarketSnapshot,
}
_RANK = {role: rank for rank, role in enumerate(ROLES)}


class InputSelectionError(ValueError):
    """The replay's input cannot be read as given (unknown role, missing file or topic); the
    message says what to fix. The CLI exits 2 with it."""


def role_named(name: str) -> str:
    """A role from its name in the topics file (`strategy_mode`) or as a topic stem (`strategy-mode`)."""
    role = name.strip().replace("-", "_")
    if role not in ROLES:
        raise InputSelectionError(f"unknown role {name!r}: use one of {', '.join(ROLES)} (a bare PATH is decisions)")
    return role


def parse_file_specs(specs: Iterable[str]) -> dict[str, Path]:
    """`--from-file [ROLE=]PATH` values to {role: path}: a bare path is decisions; each role once;
    every file must exist."""
    files: dict[str, Path] = {}
    for spec in specs:
        role, path = "decisions", Path(spec)
        if "=" in spec and not path.is_file():
            name, _, rest = spec.partition("=")
            try:
                role, path = role_named(name), Path(rest)
            except InputSelectionError as exc:
                raise InputSelectionError(f"--from-file {spec}: {exc}") from None
        if role in files:
            raise InputSelectionError(f"--from-file {spec}: {role} is given twice (one file per role)")
        if not path.is_file():
            raise InputSelectionError(f"--from-file {spec}: no such file {path}")
        files[role] = path
    return files


@dataclass(frozen=True, slots=True)
class RawRecord:
    role: str
    partition: int
    offset: int
    value: bytes


def read_files(files: Mapping[str, Path]) -> list[RawRecord]:
    """Every record of every file (JSON bytes: Avro containers are read into JSON)."""
    return [
        RawRecord(role, 0, offset, value)
        for role, path in files.items()
        for offset, value in enumerate(read_input_file(path))
    ]


async def read_topics(
    kafka: KafkaConfig, topics: TopicsFile, schemas_dir: Path, from_ts_ms: int | None = None
) -> tuple[list[RawRecord], dict[str, WireCodec]]:
    """Every committed record of every input role the topics file names, with each role's codec.

    `from_ts_ms` starts the inputs and market data at that time; the compacted state roles
    (strategy_mode, harvest_health) are read whole, as the live worker reads them at start.
    Raises InputSelectionError naming any role whose topic does not exist on the cluster.
    """
    from worker.io.kafka import read_committed_topic
    from worker.io.topics import TopicsConfigError, codec_for

    roles = [role for role in ROLES if role in topics.topics]
    names = {role: topics.role(role).name for role in roles}
    async with kafka.admin_session() as admin:
        existing = set(await admin.list_topics())
    missing = [f"{names[role]} (role {role})" for role in roles if names[role] not in existing]
    if missing:
        raise InputSelectionError(
            f"topics missing on the cluster: {', '.join(missing)}; pass the topics file of the deployment "
            "you replay (--topics FILE), or create them with `execworker topics apply --topics FILE`"
        )
    codecs: dict[str, WireCodec] = {}
    records: list[RawRecord] = []
    for role in roles:
        try:
            codecs[role] = codec_for(topics.role(role), schemas_dir)
        except TopicsConfigError as exc:
            raise InputSelectionError(str(exc)) from None
        start = None if role in STATE_ROLES else from_ts_ms
        for record in await read_committed_topic(kafka, names[role], None, start):
            records.append(RawRecord(role, record.partition, record.offset, record.value))
    return records, codecs


@dataclass(frozen=True, slots=True)
class Item:
    key: tuple[int, int, str, int, int, int]
    role: str
    partition: int  # of the input partition read from: which policy state applies
    message: Message


@dataclass
class MergedInputs:
    items: list[Item] = field(default_factory=list)
    rejected: Counter[str] = field(default_factory=Counter)  # bad input records, by error class
    ignored: Counter[str] = field(default_factory=Counter)  # bad control records, by role
    records: Counter[str] = field(default_factory=Counter)  # decoded records, by role

    @property
    def inputs(self) -> int:
        return self.records["decisions"] + self.records["signals"]


def merge(records: Iterable[RawRecord], codecs: Mapping[str, WireCodec] | None = None) -> MergedInputs:
    """Decodes every record with its role's codec (JSON if none is given) and sorts them into the
    merge order (module docstring). A record that cannot be decoded is counted, never fatal."""
    json = JsonWire()
    merged = MergedInputs()
    position: Counter[tuple[str, str]] = Counter()
    for raw in sorted(records, key=lambda r: (_RANK[r.role], r.partition, r.offset)):
        codec = (codecs or {}).get(raw.role, json)
        try:
            message: Message = codec.decode(MODELS[raw.role], raw.value)  # type: ignore[assignment]
        except DecodeError as exc:
            if raw.role in INPUT_ROLES:
                merged.rejected[exc.error_class.value] += 1
            else:
                merged.ignored[raw.role] += 1
            continue
        merged.records[raw.role] += 1
        merged.items.append(Item(_key(raw, message, position), raw.role, raw.partition, message))
    merged.items.sort(key=lambda item: item.key)
    return merged


def _key(raw: RawRecord, message: Message, position: Counter[tuple[str, str]]) -> tuple[int, int, str, int, int, int]:
    rank = _RANK[raw.role]
    if isinstance(message, Decision | Signal):
        index = position[(message.symbol, raw.role)]
        position[(message.symbol, raw.role)] += 1
        return (message.event_ts_ms, 1, message.symbol, rank, index, 0)
    at = message.event_time_ms if isinstance(message, MarketSnapshot) else message.ts_ms
    return (at, 0, "", rank, raw.partition, raw.offset)
