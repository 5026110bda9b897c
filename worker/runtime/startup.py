"""Everything before a worker's first poll: the cluster as the topics file says, the venue's
limits, clock and filters, the control feeds, and the group consumer.

A worker that starts while the broker or the venue restarts waits for it (`broker_wait_s`): a
supervisor restarting workers must not see them die of a broker that is coming back. Missing
topics, refused ACLs, unreadable venue filters and bad settings still fail at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.errors import KafkaError

from worker.core.engine import ExecutionEngine
from worker.core.venue_filters import VenueFiltersError, VenueNotReady
from worker.io.kafka import BrokerUnreachable, KafkaConfig, topic_partitions
from worker.io.outbox import Outbox
from worker.io.topics import TopicsFile, check_cluster_topics
from worker.runtime.control import ControlFeed
from worker.runtime.settings import WorkerSettings

log = logging.getLogger("worker.runtime.worker")

# Topics the worker reads or writes; checked at start so a missing one fails fast, not silently.
WORKER_ROLES = ("decisions", "signals", "exec_events", "dlq", "strategy_mode", "harvest_health")


@dataclass(frozen=True)
class Startup:
    settings: WorkerSettings
    kafka: KafkaConfig
    topics: TopicsFile
    input_topics: list[str]
    engine: ExecutionEngine
    control: ControlFeed
    outbox: Outbox

    async def start(self, listener: ConsumerRebalanceListener) -> tuple[AIOKafkaConsumer, dict[str, int]]:
        """The subscribed consumer, and each input topic's partition count; retried as a whole."""
        deadline = time.monotonic() + self.settings.broker_wait_s
        while True:
            try:
                return await self._start_once(listener)
            except (BrokerUnreachable, KafkaError, OSError, VenueNotReady) as exc:
                await self.control.stop()
                if time.monotonic() >= deadline:
                    raise
                what = "venue" if isinstance(exc, VenueNotReady) else "Kafka"
                log.warning("%s not ready (%s); waiting for it", what, exc)
                await asyncio.sleep(1.0)

    async def _start_once(self, listener: ConsumerRebalanceListener) -> tuple[AIOKafkaConsumer, dict[str, int]]:
        partitions = await self._check_cluster()
        self.outbox.remove_stale_parts()
        # Forced modes and feed health apply from the first order on.
        await self.control.start()
        await self._start_venue()
        settings = self.settings
        consumer = self.kafka.consumer(
            group_id=settings.group_id,
            isolation_level="read_committed",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            # Range assignment gives one member partition p of every input topic together,
            # which co-partitioning with exec-events requires.
            partition_assignment_strategy=(RangePartitionAssignor,),
            max_poll_records=settings.max_batch,
            fetch_max_wait_ms=settings.fetch_max_wait_ms,
            group_instance_id=settings.group_instance_id,
            session_timeout_ms=settings.session_timeout_ms,
            # Heartbeats at a third of the session timeout, as Kafka recommends.
            heartbeat_interval_ms=settings.session_timeout_ms // 3,
        )
        try:
            await consumer.start()
            consumer.subscribe(self.input_topics, listener=listener)
        except BaseException:
            await consumer.stop()
            raise
        return consumer, partitions

    async def _check_cluster(self) -> dict[str, int]:
        """The broker answers, the topics exist as the topics file says; input partition counts."""
        await self.kafka.check_reachable()
        async with self.kafka.admin_session() as admin:
            await check_cluster_topics(admin, self.topics, WORKER_ROLES)
        # ACLs: a refused group or transactional id fails here, not in a rebalance callback.
        transactional_ids = [
            f"{self.settings.transactional_prefix}-p{p}" for p in range(self.topics.role("decisions").partitions)
        ]
        await self.kafka.check_access(self.settings.group_id, transactional_ids)
        probe = self.kafka.consumer(group_id=None)
        await probe.start()
        try:
            return {topic: len(await topic_partitions(probe, topic)) for topic in self.input_topics}
        finally:
            await probe.stop()

    async def _start_venue(self) -> None:
        """A live venue's limits and clock, before the first intent is stamped with that clock."""
        executor = self.engine.executor
        start_venue = getattr(executor, "start", None)
        if start_venue is None:
            return
        await start_venue()
        if self.engine.config.venue_grid is None or getattr(executor, "venue_filters", 0) is not None:
            return
        if not getattr(executor, "venue_answered", True):
            raise VenueNotReady(
                "the venue did not answer exchangeInfo, so decisions' grids cannot be checked "
                "(--venue-grid); is the venue reachable at --venue? (--venue-grid off trusts the decisions)"
            )
        raise VenueFiltersError(
            "the venue's exchangeInfo filters are unreadable, so decisions' grids cannot be checked "
            "(--venue-grid off trusts the decisions)"
        )
