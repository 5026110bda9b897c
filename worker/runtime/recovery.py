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
from dataclasses import dataclass

from aiokafka import TopicPartition

from worker.codec.errors import DecodeError
from worker.codec.json_codec import encode_json
from worker.codec.wire import JsonWire, WireCodec
from worker.contract.events import ExecEvent
from worker.contract.state_machine import IllegalTransition
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


async def rebuild_partitions(
    kafka: KafkaConfig,
    exec_topic: str,
    codec: WireCodec,
    partitions: list[int],
    outbox: Outbox,
    policy: PreTradePolicy | None = None,
) -> dict[int, RebuiltPartition]:
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
        result = {tp.partition: RebuiltPartition(OrderTable(), PolicyState(), 0, 0, {}) for tp in tps}
        remaining = {tp for tp in tps if ends[tp] > 0}
        while remaining:
            batches = await consumer.getmany(*remaining, timeout_ms=1000, max_records=_REBUILD_FETCH)
            for tp, records in batches.items():
                state = result[tp.partition]
                mark = outbox.mark(exec_topic, tp.partition)
                lines: list[OutboxLine] = []
                for record in records:
                    if record.offset >= ends[tp] or record.value is None:
                        continue
                    try:
                        event = codec.decode(ExecEvent, record.value)
                    except DecodeError as exc:
                        raise HistoryUnreadable(
                            f"{tp.topic}[{tp.partition}]@{record.offset} is not an exec-event ({exc}); "
                            "the partition's state cannot be rebuilt (docs/operations.md: corrupt exec-events)"
                        ) from None
                    try:
                        folded = state.table.apply(event)
                    except IllegalTransition as exc:
                        log.error("exec-events %s history: %s; event %s skipped", tp, exc, event.event_id)
                    else:
                        if policy is not None and folded.events == 1:
                            policy.state = state.policy
                            policy.restore(event)
                    state.events_read += 1
                    previous = state.source_high.get(event.source.topic, -1)
                    state.source_high[event.source.topic] = max(previous, event.source.offset)
                    if record.offset >= mark:
                        line = record.value if isinstance(codec, JsonWire) else encode_json(event)
                        lines.append(OutboxLine(event.symbol, event.event_ts_ms, event.event_id, line))
                state.republished += outbox.publish(lines, stream_of(exec_topic, tp.partition))
            for tp in list(remaining):
                if await consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
        for tp in tps:
            result[tp.partition].table.commit()
            outbox.set_mark(exec_topic, tp.partition, ends[tp])
        return result
    finally:
        await consumer.stop()
