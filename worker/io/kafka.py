"""Kafka client construction and the checks that make a missing broker fail fast and clearly."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaConnectionError, KafkaError
from aiokafka.structs import ConsumerRecord

DEFAULT_BOOTSTRAP = "127.0.0.1:9092"
BOOTSTRAP_ENV = "KAFKA_BOOTSTRAP_SERVERS"


def bootstrap_from_env(explicit: str | None = None) -> str:
    """--bootstrap-servers, else $KAFKA_BOOTSTRAP_SERVERS, else the local `ops/kafka` broker."""
    return explicit or os.environ.get(BOOTSTRAP_ENV) or DEFAULT_BOOTSTRAP


class BrokerUnreachable(RuntimeError):
    def __init__(self, bootstrap: str, timeout_s: float, cause: str) -> None:
        super().__init__(
            f"no Kafka broker answers at {bootstrap} (waited {timeout_s:.0f}s: {cause}). "
            f"Start the local one with `ops/kafka up`, or point {BOOTSTRAP_ENV} at your cluster."
        )


@dataclass(frozen=True, slots=True)
class KafkaConfig:
    bootstrap_servers: str
    client_id: str = "execworker"
    # Seconds to wait for a broker at start-up before giving up with a clear message.
    connect_timeout_s: float = 15.0

    def admin(self) -> AIOKafkaAdminClient:
        return AIOKafkaAdminClient(bootstrap_servers=self.bootstrap_servers, client_id=f"{self.client_id}-admin")

    @asynccontextmanager
    async def admin_session(self) -> AsyncIterator[AIOKafkaAdminClient]:
        """A started admin client, closed on exit."""
        admin = self.admin()
        await admin.start()
        try:
            yield admin
        finally:
            await admin.close()

    def consumer(self, *topics: str, **options: object) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            *topics,
            bootstrap_servers=self.bootstrap_servers,
            client_id=self.client_id,
            **options,
        )

    def producer(self, **options: object) -> AIOKafkaProducer:
        return AIOKafkaProducer(
            bootstrap_servers=self.bootstrap_servers,
            client_id=self.client_id,
            **options,
        )

    async def check_reachable(self) -> None:
        """Raises `BrokerUnreachable` unless a broker answers a metadata request in time."""
        admin = self.admin()
        try:
            await asyncio.wait_for(admin.start(), timeout=self.connect_timeout_s)
            await asyncio.wait_for(admin.describe_cluster(), timeout=self.connect_timeout_s)
        except (KafkaConnectionError, KafkaError, OSError) as exc:
            raise BrokerUnreachable(self.bootstrap_servers, self.connect_timeout_s, str(exc)) from None
        except TimeoutError:
            raise BrokerUnreachable(self.bootstrap_servers, self.connect_timeout_s, "timed out") from None
        finally:
            await admin.close()


class UnknownTopic(RuntimeError):
    def __init__(self, topic: str) -> None:
        super().__init__(f"topic {topic} does not exist; create it with `execworker topics apply`")


async def topic_partitions(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    """The partitions of `topic`, after fetching fresh metadata; `UnknownTopic` if it is absent."""
    # consumer.partitions_for_topic() only knows topics the consumer already tracks; ask the
    # cluster directly (aiokafka exposes no public async equivalent on the consumer).
    cluster = await consumer._client.fetch_all_metadata()
    partitions = cluster.partitions_for_topic(topic)
    if not partitions:
        raise UnknownTopic(topic)
    return [TopicPartition(topic, p) for p in sorted(partitions)]


async def read_committed_topic(
    config: KafkaConfig,
    topic: str,
    ranges: dict[int, tuple[int | None, int | None]] | None = None,
    from_ts_ms: int | None = None,
) -> list[ConsumerRecord[bytes, bytes]]:
    """Committed records of `topic` (read_committed), partition by partition, without a group.

    `ranges` limits partitions and offsets ({partition: (first, last)}, inclusive, None = open);
    `from_ts_ms` starts each partition at the first record at or after that time. The end is the
    partition's end when the read starts: records written meanwhile are not waited for.
    """
    consumer = config.consumer(group_id=None, isolation_level="read_committed", enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [tp for tp in await topic_partitions(consumer, topic) if ranges is None or tp.partition in ranges]
        consumer.assign(tps)
        # seek_to_beginning before end_offsets: the other order leaves positions at the end
        # (observed with aiokafka 0.14).
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        if from_ts_ms is not None:
            found = await consumer.offsets_for_times({tp: from_ts_ms for tp in tps})
            for tp in tps:
                if found.get(tp) is None:
                    consumer.seek(tp, ends[tp])  # nothing that recent
                else:
                    consumer.seek(tp, found[tp].offset)
        for tp in tps:
            first, last = (ranges or {}).get(tp.partition, (None, None))
            if first is not None:
                consumer.seek(tp, first)
            if last is not None:
                ends[tp] = min(ends[tp], last + 1)
        out: list[ConsumerRecord[bytes, bytes]] = []
        remaining = {tp for tp in tps if await consumer.position(tp) < ends[tp]}
        while remaining:
            batches = await consumer.getmany(*remaining, timeout_ms=1000, max_records=10_000)
            for tp, records in batches.items():
                out.extend(r for r in records if r.offset < ends[tp] and r.value is not None)
            for tp in list(remaining):
                if await consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
        return out
    finally:
        await consumer.stop()


# Record batch size for the worker's producers: 512 KiB holds ~700 exec-events, so a typical
# transaction is one or two produce requests; it stays under the broker's 1 MiB message limit.
PRODUCER_BATCH_BYTES = 512 * 1024


async def send_to_partition(
    producer: AIOKafkaProducer,
    topic: str,
    partition: int,
    records: Sequence[tuple[bytes | None, bytes]],
) -> list[tuple[asyncio.Future[Any], int]]:
    """Sends (key, value) records to one partition in as few batches as possible.

    Building batches directly avoids a future and a coroutine per record (`send` costs ~30 us a
    record in aiokafka). Returns one (future, record count) per batch; each future resolves to the
    batch's metadata, whose offset is the batch's first offset.
    """
    sent: list[tuple[asyncio.Future[Any], int]] = []
    batch, count = producer.create_batch(), 0
    for key, value in records:
        if batch.append(key=key, value=value, timestamp=None) is None:
            if count == 0:
                raise ValueError(f"a record of {len(value)} bytes does not fit in a producer batch")
            sent.append((await producer.send_batch(batch, topic, partition=partition), count))
            batch, count = producer.create_batch(), 0
            if batch.append(key=key, value=value, timestamp=None) is None:
                raise ValueError(f"a record of {len(value)} bytes does not fit in a producer batch")
        count += 1
    if count:
        sent.append((await producer.send_batch(batch, topic, partition=partition), count))
    return sent
