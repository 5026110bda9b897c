"""Rebuilding a partition's state from its own exec-events, and catching the outbox up.

On every assignment the owner of partition p reads `exec-events` partition p (read_committed)
from the beginning: the fold of those events is the order state (and the policy's rate wall and
modes, from each order's first event), and every event at or after the outbox's mark for p is
(re-)published to `ready/`. The outbox deduplicates by event id, so this is safe whether the
previous owner died before, during or after publishing.

An exec-event that cannot be read is corruption of our own output, not bad input: the rebuild
fails loudly (`HistoryUnreadable`) rather than build state with a hole in it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from aiokafka import ConsumerRecord, TopicPartition

from worker.codec.errors import DecodeError
from worker.codec.json_codec import decode_json_reference, encode_json
from worker.codec.wire import AvroWire, JsonWire, WireCodec
from worker.contract.events import ExecEvent
from worker.core.history import CompiledHistory, HistoryRecord, JsonRecord, ReferenceHistory, UnreadableEvent
from worker.core.order_table import OrderTable
from worker.io.kafka import KafkaConfig
from worker.io.outbox import Outbox, OutboxLine, stream_of
from worker.policy.pretrade import PolicyState, PreTradePolicy

log = logging.getLogger(__name__)

# Events read per fetch while rebuilding, and outbox lines published per chunk: large enough to
# amortise round trips and file rewrites, small enough to keep memory flat on long histories.
_REBUILD_FETCH = 10_000


class HistoryUnreadable(RuntimeError):
    """An exec-event of the partition's history cannot be decoded."""


@dataclass
class RebuiltPartition:
    table: OrderTable
    policy: PolicyState
    events_read: int
    republished: int
    # Highest input offset per topic seen in committed events: a lower bound for the position.
    source_high: dict[str, int]


def _max_bytes(codec: WireCodec) -> int:
    return codec.max_bytes if isinstance(codec, JsonWire | AvroWire) else JsonWire().max_bytes


async def rebuild_partitions(
    kafka: KafkaConfig,
    exec_topic: str,
    codec: WireCodec,
    partitions: list[int],
    outbox: Outbox,
    policy: PreTradePolicy | None = None,
    fold: Literal["compiled", "reference"] = "compiled",
) -> dict[int, RebuiltPartition]:
    """Rebuilds each partition's state; `fold="reference"` is the pydantic fold (tests, benchmarks)."""
    consumer = kafka.consumer(
        group_id=None,
        isolation_level="read_committed",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        tps = [TopicPartition(exec_topic, p) for p in partitions]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        kind = CompiledHistory if fold == "compiled" else ReferenceHistory
        folds = {tp: kind(f"{tp}", policy, _max_bytes(codec)) for tp in tps}
        republished = dict.fromkeys(partitions, 0)
        remaining = {tp for tp in tps if ends[tp] > 0}
        while remaining:
            batches = await consumer.getmany(*remaining, timeout_ms=1000, max_records=_REBUILD_FETCH)
            for tp, records in batches.items():
                mark = outbox.mark(exec_topic, tp.partition)
                history: Sequence[HistoryRecord] = records
                if isinstance(codec, AvroWire):
                    history = _as_json(codec, tp, records, ends[tp])
                try:
                    events = folds[tp].feed(history, ends[tp], mark)
                except UnreadableEvent as exc:
                    raise _unreadable(tp, exc.offset, exc.error) from None
                lines = [
                    OutboxLine(
                        e.symbol,
                        e.event_ts_ms,
                        e.event_id,
                        e.line if isinstance(codec, JsonWire) else _canonical(e.line),
                    )
                    for e in events
                ]
                republished[tp.partition] += outbox.publish(lines, stream_of(exec_topic, tp.partition))
            for tp in list(remaining):
                if await consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
        result = {}
        for tp in tps:
            folded = folds[tp].finish()
            result[tp.partition] = RebuiltPartition(
                folded.table, folded.policy, folded.events_read, republished[tp.partition], folded.source_high
            )
            outbox.set_mark(exec_topic, tp.partition, ends[tp])
        return result
    finally:
        await consumer.stop()


def _canonical(line: bytes) -> bytes:
    """An Avro exec-event's outbox line: the canonical JSON of its model."""
    return encode_json(decode_json_reference(ExecEvent, line))


def _as_json(
    codec: AvroWire, tp: TopicPartition, records: Sequence[ConsumerRecord[bytes, bytes]], end: int
) -> list[JsonRecord]:
    """Avro exec-events as the JSON objects the model validates (the fold reads JSON)."""
    out = []
    for r in records:
        if r.offset < end and r.value is not None:
            try:
                out.append(JsonRecord(r.offset, codec.json_of(r.value)))
            except DecodeError as exc:
                raise _unreadable(tp, r.offset, exc) from None
    return out


def _unreadable(tp: TopicPartition, offset: int, exc: DecodeError) -> HistoryUnreadable:
    return HistoryUnreadable(
        f"{tp.topic}[{tp.partition}]@{offset} is not an exec-event ({exc}); "
        "the partition's state cannot be rebuilt (docs/operations.md: corrupt exec-events)"
    )
