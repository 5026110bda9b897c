"""One Kafka transaction of a partition batch: exec-events, DLQ records and input offsets.

Either all of it becomes visible to read_committed readers, or none of it does. A failure
aborts (except for a fenced producer, which cannot abort: the new owner's `init_transactions`
already did) and re-raises for the caller to roll its state back.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError, ProducerFenced

from worker.codec.json_codec import encode_json
from worker.codec.wire import JsonWire, WireCodec
from worker.contract.events import DlqRecord, ExecEvent
from worker.io.kafka import send_to_partition

log = logging.getLogger(__name__)


class TransactionWriter:
    def __init__(
        self,
        exec_events: tuple[str, WireCodec],
        dlq: tuple[str, WireCodec, int],
        group_id: str,
    ) -> None:
        self._exec_topic, self._exec_codec = exec_events
        self._dlq_topic, self._dlq_codec, self._dlq_partitions = dlq
        self._group_id = group_id
        # `run --shadow` (runtime/shadow.py): the shadow's topic, and per partition the shadow's
        # events staged for that partition's next transaction, with what to do once it commits.
        self.shadow_events: tuple[str, WireCodec] | None = None
        self._shadow: dict[int, tuple[Sequence[ExecEvent], Callable[[], None]]] = {}

    def stage_shadow(self, partition: int, events: Sequence[ExecEvent], on_commit: Callable[[], None]) -> None:
        """The shadow's events join `partition`'s next transaction (co-partitioned with its
        exec-events); `on_commit` runs only if that transaction commits."""
        self._shadow[partition] = (events, on_commit)

    async def commit(
        self,
        producer: AIOKafkaProducer,
        partition: int,
        events: list[ExecEvent],
        dead: list[DlqRecord],
        offsets: dict[TopicPartition, int],
    ) -> tuple[list[tuple[ExecEvent, bytes]], int | None]:
        """Returns the events with their JSON lines (for the outbox) and the exec-events offset
        after the last one (None when there were none). Staged shadow events go to
        `shadow_events` in the same transaction (not to the outbox)."""
        shadow, on_commit = self._shadow.pop(partition, ((), None))
        payloads = [(event, encode_json(event)) for event in events]
        # The outbox is always JSONL; the topic uses its own format (the same bytes for JSON).
        kafka_values = (
            [line for _, line in payloads]
            if isinstance(self._exec_codec, JsonWire)
            else [self._exec_codec.encode(event) for event in events]
        )
        await producer.begin_transaction()
        try:
            exec_batches = await send_to_partition(
                producer,
                self._exec_topic,
                partition,  # co-partitioned with the input, explicitly
                [(event.symbol.encode(), value) for event, value in zip(events, kafka_values, strict=True)],
            )
            dlq_batches = await send_to_partition(
                producer,
                self._dlq_topic,
                partition % self._dlq_partitions,
                [(record.source.topic.encode(), self._dlq_codec.encode(record)) for record in dead],
            )
            if shadow and self.shadow_events is not None:
                shadow_topic, shadow_codec = self.shadow_events
                rows = [(event.symbol.encode(), shadow_codec.encode(event)) for event in shadow]
                dlq_batches += await send_to_partition(producer, shadow_topic, partition, rows)  # awaited below
            if offsets:
                await producer.send_offsets_to_transaction(offsets, self._group_id)
            exec_meta = await asyncio.gather(*(future for future, _ in exec_batches))
            await asyncio.gather(*(future for future, _ in dlq_batches))
            await producer.commit_transaction()
        except ProducerFenced:
            raise  # a fenced producer cannot abort; the new owner's init_transactions did
        except BaseException:
            await quiet_abort(producer)
            raise
        if on_commit is not None:
            on_commit()
        next_exec_offset = None
        if exec_batches:
            next_exec_offset = exec_meta[-1].offset + exec_batches[-1][1]
        return payloads, next_exec_offset


async def quiet_abort(producer: AIOKafkaProducer) -> None:
    try:
        await producer.abort_transaction()
    except (KafkaError, AssertionError) as exc:
        # A producer in a fatal state cannot abort (aiokafka asserts on the state change); the
        # broker aborts the transaction when it times out or the next owner starts.
        log.warning("abort failed: %s", exc)
