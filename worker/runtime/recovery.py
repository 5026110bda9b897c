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
from dataclasses import dataclass, field
from typing import Literal

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from worker.codec.errors import DecodeError
from worker.codec.json_codec import decode_json_reference, encode_json
from worker.codec.wire import AvroWire, JsonWire, WireCodec
from worker.contract.events import ExecEvent
from worker.core.history import (
    CompiledHistory,
    HistoryRecord,
    JsonRecord,
    ReferenceHistory,
    Republish,
    UnreadableEvent,
)
from worker.core.order_table import OrderTable
from worker.io.kafka import KafkaConfig
from worker.io.outbox import Outbox, OutboxLine, stream_of
from worker.io.record_batches import BatchReader
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
    reader: Literal["batches", "consumer"] = "batches",
) -> dict[int, RebuiltPartition]:
    """Rebuilds each partition's state; `fold="reference"` is the pydantic fold (tests, benchmarks).

    The compiled fold of JSON exec-events reads the partitions' record batches itself
    (`reader="batches"`: worker/io/record_batches.py), and reads a partition through aiokafka's
    consumer from the first batch it does not handle (compressed, an old format) or cannot fetch;
    `reader="consumer"` reads everything through the consumer (tests, benchmarks)."""
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
        batch_reader = None
        if fold == "compiled" and reader == "batches" and isinstance(codec, JsonWire):
            batch_reader = BatchReader.of(consumer)
        if batch_reader is not None:
            consumer.pause(*tps)  # its fetcher stays idle: the batch reader reads them
        ends = await consumer.end_offsets(tps)
        kind = CompiledHistory if fold == "compiled" else ReferenceHistory
        folds = {tp: kind(f"{tp}", policy, _max_bytes(codec)) for tp in tps}
        rebuild = _Rebuild(exec_topic, codec, outbox, folds, ends, dict.fromkeys(partitions, 0))
        if batch_reader is not None:
            starts = await consumer.beginning_offsets(tps)
            await rebuild.read_batches(batch_reader, consumer, {tp: starts[tp] for tp in tps if ends[tp] > starts[tp]})
        else:
            await consumer.seek_to_beginning(*tps)
            rebuild.through_consumer.update(tp for tp in tps if ends[tp] > 0)
        await rebuild.read_through(consumer)
        result = {}
        for tp in tps:
            folded = folds[tp].finish()
            result[tp.partition] = RebuiltPartition(
                folded.table, folded.policy, folded.events_read, rebuild.republished[tp.partition], folded.source_high
            )
            outbox.set_mark(exec_topic, tp.partition, ends[tp])
        return result
    finally:
        await consumer.stop()


# A partition whose batches make no progress this many fetches in a row is read by the consumer.
_STALLED_FETCHES = 3


@dataclass
class _Rebuild:
    exec_topic: str
    codec: WireCodec
    outbox: Outbox
    folds: dict[TopicPartition, CompiledHistory | ReferenceHistory]
    ends: dict[TopicPartition, int]
    republished: dict[int, int]
    through_consumer: set[TopicPartition] = field(default_factory=set)

    async def read_batches(
        self, reader: BatchReader, consumer: AIOKafkaConsumer, positions: dict[TopicPartition, int]
    ) -> None:
        """Reads the partitions' record batches from these offsets up to their ends; a partition
        the reader cannot go on with is handed to the consumer at its position."""
        stalled = dict.fromkeys(positions, 0)
        while positions:
            fetched = await reader.fetch(positions)
            for tp, batches in fetched.items():
                position = positions[tp]
                fold = self.folds[tp]
                unhandled = batches is None or not isinstance(fold, CompiledHistory)
                if batches is not None and isinstance(fold, CompiledHistory):
                    mark = self.outbox.mark(self.exec_topic, tp.partition)
                    try:
                        next_offset, unhandled, events = fold.feed_batches(
                            batches.records, position, self.ends[tp], mark, batches.aborted
                        )
                    except UnreadableEvent as exc:
                        raise _unreadable(tp, exc.offset, exc.error) from None
                    self.publish(tp, events)
                    stalled[tp] = 0 if next_offset > position else stalled[tp] + 1
                    position = positions[tp] = next_offset
                    if position >= self.ends[tp]:
                        del positions[tp]
                        continue
                if unhandled or stalled[tp] >= _STALLED_FETCHES:
                    log.info("rebuild: %s read through the consumer from offset %d", tp, position)
                    del positions[tp]
                    consumer.seek(tp, position)
                    consumer.resume(tp)
                    self.through_consumer.add(tp)

    async def read_through(self, consumer: AIOKafkaConsumer) -> None:
        """Reads the partitions handed to the consumer up to their ends."""
        remaining = self.through_consumer
        while remaining:
            batches = await consumer.getmany(*remaining, timeout_ms=1000, max_records=_REBUILD_FETCH)
            for tp, records in batches.items():
                mark = self.outbox.mark(self.exec_topic, tp.partition)
                history: Sequence[HistoryRecord] = records
                if isinstance(self.codec, AvroWire):
                    history = _as_json(self.codec, tp, records, self.ends[tp])
                try:
                    events = self.folds[tp].feed(history, self.ends[tp], mark)
                except UnreadableEvent as exc:
                    raise _unreadable(tp, exc.offset, exc.error) from None
                self.publish(tp, events)
            for tp in list(remaining):
                if await consumer.position(tp) >= self.ends[tp]:
                    remaining.discard(tp)

    def publish(self, tp: TopicPartition, events: list[Republish]) -> None:
        json_lines = isinstance(self.codec, JsonWire)
        lines = [
            OutboxLine(e.symbol, e.event_ts_ms, e.event_id, e.line if json_lines else _canonical(e.line))
            for e in events
        ]
        self.republished[tp.partition] += self.outbox.publish(lines, stream_of(self.exec_topic, tp.partition))


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
