"""Kafka client construction and the checks that make a missing broker fail fast and clearly."""

from __future__ import annotations

import asyncio
import os
import ssl
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.client import AIOKafkaClient, CoordinationType
from aiokafka.conn import create_conn
from aiokafka.errors import (
    ClusterAuthorizationFailedError,
    GroupAuthorizationFailedError,
    KafkaConnectionError,
    KafkaError,
    SaslAuthenticationFailed,
    TopicAuthorizationFailedError,
    TransactionalIdAuthorizationFailed,
)
from aiokafka.structs import ConsumerRecord

from worker.io.kafka_security import KafkaSecurity, KafkaSecurityError

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


class KafkaAccessDenied(RuntimeError):
    """The cluster refused the credentials, the TLS handshake, or an operation (ACLs). The
    message names the principal and says what to fix; it never contains a password."""


AUTHORIZATION_ERRORS: tuple[type[Exception], ...] = (
    TopicAuthorizationFailedError,
    GroupAuthorizationFailedError,
    ClusterAuthorizationFailedError,
    TransactionalIdAuthorizationFailed,
)


def access_denied(exc: BaseException, security: KafkaSecurity, subject: str | None = None) -> KafkaAccessDenied:
    """Turns one of `AUTHORIZATION_ERRORS` into a message that says which ACL is missing."""
    who = security.principal
    detail = subject or str(exc).split(": ", 1)[-1]
    if isinstance(exc, GroupAuthorizationFailedError):
        fix = (
            f"{who} may not use the consumer group {detail!r}: grant it READ on GROUP {detail!r} "
            "(a PREFIXED ACL covers several), or run with a --group it may use"
        )
    elif isinstance(exc, TransactionalIdAuthorizationFailed):
        fix = (
            f"{who} may not use its transactional ids ({detail!r}): grant WRITE and DESCRIBE on "
            "TRANSACTIONAL_ID with a PREFIXED pattern equal to --transactional-prefix (default: the group)"
        )
    elif isinstance(exc, TopicAuthorizationFailedError):
        fix = (
            f"{who} may not access the topic(s) {detail}: grant READ (inputs) or WRITE (outputs) and "
            "DESCRIBE on them, or use a principal that has them"
        )
    else:
        fix = (
            f"{who} may not perform a cluster operation ({detail}): creating topics needs CREATE on "
            "the CLUSTER; run `topics apply` with an admin principal"
        )
    return KafkaAccessDenied(f"Kafka authorization failed: {fix}")


@dataclass(frozen=True, slots=True)
class KafkaConfig:
    bootstrap_servers: str
    client_id: str = "execworker"
    # Seconds to wait for a broker at start-up before giving up with a clear message.
    connect_timeout_s: float = 15.0
    # TLS/SASL for every client built here; from the KAFKA_* environment unless given.
    security: KafkaSecurity = field(default_factory=KafkaSecurity.from_env)

    def admin(self) -> AIOKafkaAdminClient:
        return AIOKafkaAdminClient(
            bootstrap_servers=self.bootstrap_servers,
            client_id=f"{self.client_id}-admin",
            **self.security.client_options(),
        )

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
            **self.security.client_options(),
            **options,
        )

    def producer(self, **options: object) -> AIOKafkaProducer:
        return AIOKafkaProducer(
            bootstrap_servers=self.bootstrap_servers,
            client_id=self.client_id,
            **self.security.client_options(),
            **options,
        )

    async def check_reachable(self) -> None:
        """Raises `BrokerUnreachable` unless a broker answers a metadata request in time, and
        `KafkaAccessDenied` if one answers but refuses the TLS handshake or the credentials."""
        admin = self.admin()
        try:
            await asyncio.wait_for(admin.start(), timeout=self.connect_timeout_s)
            await asyncio.wait_for(admin.describe_cluster(), timeout=self.connect_timeout_s)
        except (KafkaConnectionError, KafkaError, OSError) as exc:
            await self._diagnose()
            raise BrokerUnreachable(self.bootstrap_servers, self.connect_timeout_s, str(exc)) from None
        except TimeoutError:
            await self._diagnose()
            raise BrokerUnreachable(self.bootstrap_servers, self.connect_timeout_s, "timed out") from None
        finally:
            await admin.close()

    async def check_access(self, group_id: str, transactional_ids: Sequence[str]) -> None:
        """Fails fast (`KafkaAccessDenied`) if the principal may not use the consumer group or one
        of the transactional ids. FindCoordinator is authorized like the real use (DESCRIBE) and
        changes nothing: no producer is fenced, no group joined."""
        client = AIOKafkaClient(
            bootstrap_servers=self.bootstrap_servers,
            client_id=f"{self.client_id}-check",
            **self.security.client_options(),
        )
        await client.bootstrap()
        try:
            keys = [(CoordinationType.GROUP, group_id)]
            keys += [(CoordinationType.TRANSACTION, t) for t in transactional_ids]
            for kind, key in keys:
                try:
                    await client.coordinator_lookup(kind, key)
                except AUTHORIZATION_ERRORS as exc:
                    raise access_denied(exc, self.security, key) from None
                except KafkaError:
                    # The broker authorizes before it looks the coordinator up: any other error
                    # (e.g. a coordinator still loading on a fresh cluster) means access is fine.
                    continue
        finally:
            await client.close()

    async def _diagnose(self) -> None:
        """After a failed bootstrap: one direct connection to the first bootstrap server, to tell
        a refused login or certificate apart from an absent broker (aiokafka only logs those)."""
        if self.security.protocol == "PLAINTEXT":
            return
        host, _, port = self.bootstrap_servers.split(",")[0].strip().rpartition(":")
        try:
            options = self.security.client_options()
        except KafkaSecurityError as exc:
            raise KafkaAccessDenied(str(exc)) from None
        try:
            conn = await asyncio.wait_for(
                create_conn(host or "127.0.0.1", int(port), client_id=self.client_id, **options),
                timeout=self.connect_timeout_s,
            )
        except SaslAuthenticationFailed:
            raise KafkaAccessDenied(
                f"Kafka authentication failed at {self.bootstrap_servers}: the cluster refused "
                f"{self.security.principal} with {self.security.sasl_mechanism}. Check KAFKA_SASL_USERNAME, "
                "KAFKA_SASL_PASSWORD (or KAFKA_SASL_PASSWORD_FILE) and KAFKA_SASL_MECHANISM"
            ) from None
        except ssl.SSLCertVerificationError as exc:
            raise KafkaAccessDenied(
                f"TLS to {self.bootstrap_servers} failed: the broker's certificate is not trusted "
                f"({exc.verify_message}). Set KAFKA_SSL_CAFILE to the CA that signed it"
            ) from None
        except ssl.SSLError as exc:
            raise KafkaAccessDenied(
                f"TLS to {self.bootstrap_servers} failed ({exc.reason}): is the listener TLS? "
                "Check KAFKA_SECURITY_PROTOCOL and the port"
            ) from None
        except (KafkaError, OSError, TimeoutError, ValueError):
            return  # not a security refusal: the caller reports the broker as unreachable
        conn.close()


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
            sent.append((await _send_complete(producer, batch, topic, partition), count))
            batch, count = producer.create_batch(), 0
            if batch.append(key=key, value=value, timestamp=None) is None:
                raise ValueError(f"a record of {len(value)} bytes does not fit in a producer batch")
        count += 1
    if count:
        sent.append((await _send_complete(producer, batch, topic, partition), count))
    return sent


async def _send_complete(producer: AIOKafkaProducer, batch: Any, topic: str, partition: int) -> asyncio.Future[Any]:
    # A closed batch is complete: aiokafka's sender takes it at once instead of lingering
    # `linger_ms` for records that will never come (5 ms on every transaction's critical path).
    batch.close()
    future: asyncio.Future[Any] = await producer.send_batch(batch, topic, partition=partition)
    return future
