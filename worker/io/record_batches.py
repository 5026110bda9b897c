"""Fetching a partition's raw record batches (read_committed), for the takeover rebuild.

aiokafka's consumer turns every record into a `ConsumerRecord` (~2.8 µs each, before anyone reads
it). The rebuild only needs the values, so it sends the Fetch requests itself, through the
consumer's own client (its connections, security and metadata), and hands each partition's
record bytes and the response's aborted transactions to the compiled fold
(rust/execcore/src/record_batch.rs), which reads them as aiokafka's `PartitionRecords` does.

This goes below aiokafka's public API: it uses the consumer's `_client` and aiokafka's
`FetchRequest`, both stable across aiokafka 0.8-0.14 (pinned `<0.15`). Anything unexpected (no
client, no leader, an error code, a request failure, a broker without read_committed fetches)
comes back as `None` for the partition, and the caller reads it through the consumer instead.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.protocol.fetch import FetchRequest

log = logging.getLogger(__name__)

READ_COMMITTED = 1
# Fetch sizes: ~4 MiB of a partition per round trip (aiokafka's default is 1 MiB), at most 32 MiB
# a response, so a long history is read in few round trips with flat memory.
PARTITION_BYTES = 4 * 1024 * 1024
RESPONSE_BYTES = 32 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class FetchedBatches:
    """One partition's part of a Fetch response."""

    records: bytes  # the record batches as the broker sent them (the last may be partial)
    aborted: list[tuple[int, int]]  # (producer_id, first_offset) of aborted transactions
    last_stable_offset: int


class BatchReader:
    """Sends read_committed Fetch requests through a started consumer's client."""

    def __init__(self, client: Any, max_wait_ms: int = 500) -> None:
        self._client = client
        self._max_wait_ms = max_wait_ms

    @classmethod
    def of(cls, consumer: AIOKafkaConsumer) -> BatchReader | None:
        """The reader for a started consumer, or None if its client is not what this expects."""
        client = getattr(consumer, "_client", None)
        if client is None or not hasattr(client, "send") or not hasattr(client, "cluster"):
            return None
        return cls(client)

    async def fetch(self, positions: dict[TopicPartition, int]) -> dict[TopicPartition, FetchedBatches | None]:
        """One Fetch per leader for the partitions at these offsets; None for a partition whose
        batches cannot be fetched this way (read it through the consumer)."""
        out: dict[TopicPartition, FetchedBatches | None] = {}
        by_leader: dict[int, list[TopicPartition]] = {}
        for tp in positions:
            leader = self._client.cluster.leader_for_partition(tp)
            if leader is None or leader < 0:
                out[tp] = None
            else:
                by_leader.setdefault(leader, []).append(tp)
        answers = await asyncio.gather(
            *(self._fetch_from(leader, {tp: positions[tp] for tp in tps}) for leader, tps in by_leader.items())
        )
        for answer in answers:
            out.update(answer)
        return out

    async def _fetch_from(
        self, leader: int, positions: dict[TopicPartition, int]
    ) -> dict[TopicPartition, FetchedBatches | None]:
        out: dict[TopicPartition, FetchedBatches | None] = dict.fromkeys(positions)
        topics: dict[str, list[tuple[int, int, int]]] = {}
        for tp, offset in positions.items():
            topics.setdefault(tp.topic, []).append((tp.partition, offset, PARTITION_BYTES))
        request = FetchRequest(self._max_wait_ms, 1, RESPONSE_BYTES, READ_COMMITTED, list(topics.items()))
        try:
            response = await self._client.send(leader, request)
        except KafkaError as exc:
            log.warning("rebuild: a fetch from broker %s failed (%s); reading through the consumer", leader, exc)
            return out
        version = response.API_VERSION
        if version < 4:  # no isolation level before v4
            return out
        for topic, partitions in response.topics:
            for partition, error_code, _highwater, *part in partitions:
                tp = TopicPartition(topic, partition)
                if tp not in out or error_code != 0:
                    continue
                # v4: [lso, aborted, records]; v5-v10: [lso, log_start, aborted, records];
                # v11: [lso, log_start, aborted, preferred_read_replica, records].
                aborted = part[2] if version >= 11 else part[-2]
                records = part[-1]
                out[tp] = FetchedBatches(
                    records or b"", [(int(p), int(first)) for p, first in aborted or ()], int(part[0])
                )
        return out
