"""Reading a topic the way a downstream job does: committed records only (read_committed), from
a chosen start, optionally resuming from a consumer group's committed offsets.

The start follows kcat's `-o`: `beginning`, `end`, `stored` (the group's committed offset; the
beginning where it has none), an absolute offset `N`, or `-N` (N records before the end). With a
group, `commit()` stores how far the caller got: a restarted tail with the same group starts
exactly after the last record the previous one committed. Partitions are assigned explicitly
(all of the topic's, or the ones asked for), so a group here is a bookmark, not a way to share
partitions between tailers: run one tailer per group (or split with `partitions`).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeAlias

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord

from worker.io.kafka import KafkaConfig, topic_partitions

Record: TypeAlias = "ConsumerRecord[bytes, bytes]"


class StartAt(StrEnum):
    BEGINNING = "beginning"
    END = "end"
    STORED = "stored"
    ABSOLUTE = "absolute"
    FROM_END = "from_end"


@dataclass(frozen=True, slots=True)
class OffsetSpec:
    start: StartAt
    value: int = 0


_NUMBER = re.compile(r"^-?\d+$")


def parse_offset(text: str) -> OffsetSpec:
    """`beginning | end | stored | N | -N` (kcat's -o)."""
    if text in (StartAt.BEGINNING, StartAt.END, StartAt.STORED):
        return OffsetSpec(StartAt(text))
    if _NUMBER.match(text):
        number = int(text)
        return OffsetSpec(StartAt.FROM_END, -number) if number < 0 else OffsetSpec(StartAt.ABSOLUTE, number)
    raise ValueError(f"offset {text!r}: use beginning, end, stored, N or -N")


class TopicTail:
    """An async context manager: `async for batch in tail.batches(): ...; await tail.commit(batch)`."""

    def __init__(
        self,
        kafka: KafkaConfig,
        topic: str,
        offset: OffsetSpec,
        group: str | None = None,
        partitions: Sequence[int] | None = None,
        exit_at_end: bool = False,
        poll_timeout_ms: int = 1_000,
    ) -> None:
        if offset.start is StartAt.STORED and group is None:
            raise ValueError("offset 'stored' needs a group")
        self.kafka = kafka
        self.topic = topic
        self.offset = offset
        self.group = group
        self.partitions = list(partitions) if partitions is not None else None
        self.exit_at_end = exit_at_end
        self.poll_timeout_ms = poll_timeout_ms
        self._consumer: AIOKafkaConsumer | None = None
        self.assigned: list[TopicPartition] = []

    async def __aenter__(self) -> TopicTail:
        consumer = self.kafka.consumer(
            group_id=self.group,
            isolation_level="read_committed",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        await consumer.start()
        self._consumer = consumer
        try:
            tps = await topic_partitions(consumer, self.topic)
            if self.partitions is not None:
                known = {tp.partition for tp in tps}
                missing = sorted(set(self.partitions) - known)
                if missing:
                    raise ValueError(f"{self.topic} has no partition {missing[0]} (it has {len(tps)})")
                tps = [tp for tp in tps if tp.partition in self.partitions]
            consumer.assign(tps)
            self.assigned = tps
            await self._seek(consumer, tps)
        except BaseException:
            await consumer.stop()
            raise
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._consumer is not None:
            await self._consumer.stop()

    async def _seek(self, consumer: AIOKafkaConsumer, tps: list[TopicPartition]) -> None:
        start = self.offset.start
        if start is StartAt.STORED:
            await consumer.seek_to_beginning(*tps)  # where the group has no offset yet
            for tp in tps:
                committed = await consumer.committed(tp)
                if committed is not None:
                    consumer.seek(tp, committed)
        elif start is StartAt.BEGINNING:
            await consumer.seek_to_beginning(*tps)
        elif start is StartAt.END:
            await consumer.seek_to_end(*tps)
        else:
            await consumer.seek_to_beginning(*tps)
            firsts = await consumer.beginning_offsets(tps)
            ends = await consumer.end_offsets(tps)
            for tp in tps:
                wanted = self.offset.value if start is StartAt.ABSOLUTE else ends[tp] - self.offset.value
                consumer.seek(tp, min(max(wanted, firsts[tp]), ends[tp]))

    async def batches(self, stop: asyncio.Event | None = None) -> AsyncIterator[list[Record]]:
        """Batches of committed records in offset order per partition, until `stop` is set; with
        `exit_at_end`, ends once every partition is at its end (the last stable offset) as of the
        moment it gets there."""
        consumer = self._require()
        ends = await consumer.end_offsets(self.assigned) if self.exit_at_end else {}
        while stop is None or not stop.is_set():
            batches = await consumer.getmany(*self.assigned, timeout_ms=self.poll_timeout_ms)
            records = [r for tp in sorted(batches, key=lambda t: t.partition) for r in batches[tp]]
            if records:
                yield records
            if self.exit_at_end and await self._at(ends):
                ends = await consumer.end_offsets(self.assigned)  # records written meanwhile?
                if await self._at(ends):
                    return

    async def _at(self, ends: dict[TopicPartition, int]) -> bool:
        consumer = self._require()
        for tp in self.assigned:
            if await consumer.position(tp) < ends[tp]:
                return False
        return True

    async def commit(self, records: Sequence[Record]) -> None:
        """Stores, for the group, that everything up to and including `records` is done."""
        if self.group is None or not records:
            return
        nexts: dict[TopicPartition, int] = {}
        for record in records:
            tp = TopicPartition(record.topic, record.partition)
            nexts[tp] = max(nexts.get(tp, 0), record.offset + 1)
        await self._require().commit(nexts)

    def _require(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            raise RuntimeError("TopicTail used outside `async with`")
        return self._consumer
