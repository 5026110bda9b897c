"""Ownership of input partitions: take over (fence, rebuild, seek), release, drop when fenced,
rewind after an abort.

Per input partition number p the worker owns:
  * a transactional producer with id `{prefix}-p{p}` (started on assignment, which fences any
    previous owner and completes or aborts its open transaction before we read offsets);
  * the partition's `OrderTable` and policy state, rebuilt from `exec-events` partition p;
  * the outbox mark for exec-events partition p.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import IllegalStateError, KafkaError

from worker.codec.wire import WireCodec
from worker.core.order_table import OrderTable
from worker.io.kafka import PRODUCER_BATCH_BYTES, BrokerUnreachable, KafkaConfig
from worker.io.outbox import Outbox
from worker.policy.pretrade import PolicyState, PreTradePolicy
from worker.runtime.mirror import OutboxMirror
from worker.runtime.recovery import RebuiltPartition, rebuild_partitions
from worker.runtime.settings import WorkerSettings

log = logging.getLogger(__name__)

# A takeover that fails for another reason than the broker (an unreadable history) is tried this
# often, then the process exits non-zero: a partition is never left assigned without an owner.
TAKEOVER_TRIES = 3
TAKEOVER_BACKOFF_S = 0.5  # doubled per try, up to the max
TAKEOVER_BACKOFF_MAX_S = 5.0


@dataclass
class PartitionOwner:
    partition: int
    producer: AIOKafkaProducer
    table: OrderTable
    policy: PolicyState  # committed; a batch works on a copy, kept only if it commits
    # Next input offset to process per topic-partition. Records below it were already committed;
    # the fetcher can hand them out again around a seek, so they are skipped, not trusted.
    next_offset: dict[TopicPartition, int] = field(default_factory=dict)
    reconcile_due: bool = False  # a venue answer could not be committed, or a query failed
    # Held while a batch or a reconcile of this partition runs (one transaction at a time on its
    # producer), and by release, which so waits for the transaction in flight.
    busy: asyncio.Lock = field(default_factory=asyncio.Lock)
    epoch: int = 0  # bumped by a rewind: records fetched before it are read again, not used
    released: bool = False  # released, fenced or never completed: nothing more is processed


@dataclass(frozen=True)
class ExecHistory:
    """Where a partition's state is rebuilt from and its outbox republished to."""

    topic: str
    codec: WireCodec
    outbox: Outbox
    mirror: OutboxMirror


class Partitions:
    def __init__(
        self,
        settings: WorkerSettings,
        kafka: KafkaConfig,
        input_topics: list[str],
        history: ExecHistory,
        policy: PreTradePolicy,
        on_acquired: Callable[[PartitionOwner], Awaitable[int]],
        on_failed: Callable[[], None],
    ) -> None:
        self.settings = settings
        self.kafka = kafka
        self.input_topics = input_topics
        self.history = history
        self.policy = policy
        self._on_acquired = on_acquired  # settles the partition's unfinished orders with the venue
        self._on_failed = on_failed  # stops the worker
        self.owners: dict[int, PartitionOwner] = {}
        # Held while partitions change hands (batches take their owner's `busy` lock instead).
        self.lock = asyncio.Lock()
        self.consumer: AIOKafkaConsumer | None = None
        self.fatal: BaseException | None = None  # a takeover that failed for good

    def listener(self) -> ConsumerRebalanceListener:
        return _Rebalance(self)

    def owns(self, owner: PartitionOwner) -> bool:
        """Still the owner: not released or fenced here, and still assigned by the group."""
        consumer = self.consumer
        return (
            self.owners.get(owner.partition) is owner
            and consumer is not None
            and TopicPartition(self.input_topics[0], owner.partition) in consumer.assignment()
        )

    async def acquire(self, partitions: list[int]) -> None:
        """Takes ownership of partitions, retried; on failure the worker stops and exits non-zero.

        The rebalance callback must not swallow a failure: a partition assigned to us without an
        owner would have its records skipped while its position advanced (lag 0, "drained").
        A broker that restarts during the takeover is waited for as long as a starting worker
        waits for it (`broker_wait_s`); any other failure is tried `TAKEOVER_TRIES` times.
        """
        # The group assigns partitions before this callback runs, and the fetcher may serve their
        # records meanwhile (aiokafka): paused until they have an owner, or they would be skipped.
        held = [TopicPartition(topic, p) for topic in self.input_topics for p in partitions]
        if self.consumer is not None:
            self.consumer.pause(*held)
        deadline = time.monotonic() + self.settings.broker_wait_s
        attempt = 0
        while True:
            attempt += 1
            try:
                await self._acquire(partitions)
                if self.consumer is not None:
                    self.consumer.resume(*held)
                return
            except Exception as exc:
                broker_down = isinstance(exc, KafkaError | OSError | BrokerUnreachable)
                log.error("taking over %s failed (try %d): %s", partitions, attempt, exc)
                async with self.lock:
                    for p in partitions:
                        owner = self.owners.pop(p, None)
                        if owner is not None:
                            await self._stop(owner)
                if time.monotonic() >= deadline if broker_down else attempt >= TAKEOVER_TRIES:
                    self.fatal = exc
                    self._on_failed()
                    if self.consumer is not None:
                        self.consumer.pause(*self.consumer.assignment())
                    return
                await asyncio.sleep(min(TAKEOVER_BACKOFF_S * 2 ** (attempt - 1), TAKEOVER_BACKOFF_MAX_S))

    async def _acquire(self, partitions: list[int]) -> None:
        """Fence the old owner, rebuild state (orders and policy), seek."""
        async with self.lock:
            new = [p for p in partitions if p not in self.owners]
            producers: dict[int, AIOKafkaProducer] = {}
            for p in new:
                producer = self.kafka.producer(
                    transactional_id=f"{self.settings.transactional_prefix}-p{p}",
                    enable_idempotence=True,
                    transaction_timeout_ms=self.settings.transaction_timeout_ms,
                    linger_ms=5,
                    max_batch_size=PRODUCER_BATCH_BYTES,
                )
                # init_transactions: bumps the epoch (fencing a zombie) and waits until the
                # previous owner's open transaction is committed or aborted.
                await producer.start()
                producers[p] = producer
            for p in new:
                await self.history.mirror.drain(p)  # a partition we lost to fencing and got back
            try:
                rebuilt = await rebuild_partitions(
                    self.kafka, self.history.topic, self.history.codec, new, self.history.outbox, self.policy
                )
            except BaseException:
                for producer in producers.values():
                    await producer.stop()
                raise
            for p in new:
                state = rebuilt[p]
                owner = PartitionOwner(p, producers[p], state.table, state.policy)
                await owner.busy.acquire()  # nothing else runs on the partition until it is settled
                self.owners[p] = owner
                try:
                    await self._settle(owner, state)
                finally:
                    owner.busy.release()

    async def _settle(self, owner: PartitionOwner, state: RebuiltPartition) -> None:
        """Seeks a new owner's inputs and settles its unfinished orders with the venue."""
        consumer = self.consumer
        assert consumer is not None
        p = owner.partition
        for topic in self.input_topics:
            tp = TopicPartition(topic, p)
            committed = await consumer.committed(tp)
            floor = state.source_high.get(topic, -1) + 1
            start = max(committed or 0, floor)
            # Seek only when our own events prove the committed offset stale; otherwise
            # the group's committed offset (or the reset policy) already applies.
            if floor > (committed or 0):
                consumer.seek(tp, start)
            owner.next_offset[tp] = start
        # In-flight orders are settled with the venue before any new input is read.
        reconciled = await self._on_acquired(owner)
        log.info(
            "partition %d acquired: %d orders from %d events, %d outbox lines republished, %d orders reconciled",
            p,
            len(state.table),
            state.events_read,
            state.republished,
            reconciled,
        )

    async def release(self, partitions: set[int]) -> None:
        async with self.lock:
            for p in sorted(partitions):
                owner = self.owners.pop(p, None)
                if owner is not None:
                    await self._stop(owner)
                    log.info("partition %d released", p)
                # The next owner's catch-up starts from our mark: it must be final first.
                await self.history.mirror.drain(p)

    async def _stop(self, owner: PartitionOwner) -> None:
        """Waits for the owner's transaction in flight, then ends its ownership."""
        async with owner.busy:
            owner.released = True
            await owner.producer.stop()

    async def drop_fenced(self, owner: PartitionOwner) -> None:
        """A newer owner fenced our producer: the partition is not ours any more. Called from
        within the owner's batch (which holds `busy`). The outbox queue is drained by the revoke
        that follows (`release`), or by a later takeover of the partition (`_acquire`): draining
        here too would race the revoke's drain of the same partition."""
        log.error("partition %d: fenced by a newer owner; dropping it", owner.partition)
        owner.table.rollback()
        owner.released = True
        self.owners.pop(owner.partition, None)
        await owner.producer.stop()

    def settled(self, assignment: set[TopicPartition]) -> bool:
        """Every assigned partition has an owner and none is in the middle of something (a
        takeover holds the new owner's `busy` lock until its orders are settled)."""
        owners = self.owners
        return all((owner := owners.get(tp.partition)) is not None and not owner.busy.locked() for tp in assignment)

    def hold(self, owner: PartitionOwner) -> None:
        """Pauses fetching the owner's inputs (its lane is full); records already fetched and not
        handed out are dropped by aiokafka and fetched again from the position after `unhold`."""
        self._flow(owner, pause=True)

    def unhold(self, owner: PartitionOwner) -> None:
        self._flow(owner, pause=False)

    def _flow(self, owner: PartitionOwner, pause: bool) -> None:
        consumer = self.consumer
        if consumer is None or self.owners.get(owner.partition) is not owner:
            return  # not ours any more: a takeover pauses and resumes it on its own
        for tp in (TopicPartition(topic, owner.partition) for topic in self.input_topics):
            try:
                if pause:
                    consumer.pause(tp)
                else:
                    consumer.resume(tp)
            except IllegalStateError:
                log.info("partition %s revoked meanwhile; its fetching is not ours to change", tp)

    def rewind(self, owner: PartitionOwner) -> None:
        """After an aborted transaction: staged state dropped, every input of the partition back
        to the offset we last committed, so that the batch, and whatever was fetched after it, is
        processed again from scratch.

        No await in here: the seeks and the epoch move at once, so the lane drops every batch
        fetched before them and keeps every batch fetched after. `next_offset` is our own record
        of what we committed (the broker's answer can lag a transaction that just committed).
        """
        owner.table.rollback()
        consumer = self.consumer
        assert consumer is not None
        for tp in (TopicPartition(topic, owner.partition) for topic in self.input_topics):
            try:
                consumer.seek(tp, owner.next_offset.get(tp, 0))
            except IllegalStateError:
                # Revoked meanwhile: its next owner starts from the committed offsets anyway.
                log.info("partition %s revoked during an abort; nothing to rewind", tp)
        owner.epoch += 1


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, partitions: Partitions) -> None:
        self._partitions = partitions

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self._partitions.release({tp.partition for tp in revoked})

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        await self._partitions.acquire(sorted({tp.partition for tp in assigned}))
