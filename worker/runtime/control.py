"""The control feed: `strategy-mode.v1` (explicit modes), `harvest-health.v1` (feed health) and
`market.v1` (market activity for the modes' market trigger: snapshots per second of event time).

Both topics are compacted: the latest value per key is the state. The feed reads them from the
beginning before the worker consumes any input (so a forced mode applies from the first order),
then follows them in the background. A message that cannot be used is logged and counted, never
fatal: control input must not stop execution. A replay applies the same records the same way
(`worker/policy/feeds.py`), in its merge order (`worker/runtime/replay_inputs.py`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition

from worker.codec.errors import DecodeError
from worker.codec.wire import WireCodec
from worker.contract.messages import HarvestHealth, MarketSnapshot, StrategyModeCommand
from worker.io.kafka import KafkaConfig, topic_partitions
from worker.io.topics import TopicsFile, codec_for
from worker.policy.feeds import ControlInputs
from worker.policy.pretrade import PreTradePolicy
from worker.runtime.metrics import WorkerMetrics

log = logging.getLogger(__name__)


class ControlFeed:
    def __init__(
        self,
        kafka: KafkaConfig,
        policy: PreTradePolicy,
        metrics: WorkerMetrics,
        mode_topic: tuple[str, WireCodec],
        health_topic: tuple[str, WireCodec],
        market_topic: tuple[str, WireCodec] | None = None,
    ) -> None:
        self._kafka = kafka
        self._metrics = metrics
        self._codecs = {mode_topic[0]: mode_topic[1], health_topic[0]: health_topic[1]}
        self._mode_topic = mode_topic[0]
        self._market_topic = market_topic[0] if market_topic else None
        if market_topic is not None:
            self._codecs[market_topic[0]] = market_topic[1]
        # What each control record does to the policy (shared with the replay: policy/feeds.py).
        self._inputs = ControlInputs(policy)
        # Also handed every market snapshot (the shadow's live market view, runtime/shadow.py).
        self.on_market: list[Callable[[MarketSnapshot], None]] = []
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def for_topics(
        cls, kafka: KafkaConfig, policy: PreTradePolicy, metrics: WorkerMetrics, topics: TopicsFile, schemas_dir: Path
    ) -> ControlFeed:
        """The feeds of a topics file's strategy_mode, harvest_health and (if any) market roles."""

        def feed(role: str) -> tuple[str, WireCodec]:
            return topics.role(role).name, codec_for(topics.role(role), schemas_dir)

        market = feed("market") if "market" in topics.topics else None
        return cls(kafka, policy, metrics, feed("strategy_mode"), feed("harvest_health"), market)

    async def start(self) -> None:
        """Reads both topics to their current end, then keeps following them."""
        consumer = self._kafka.consumer(group_id=None, isolation_level="read_committed", enable_auto_commit=False)
        await consumer.start()
        self._consumer = consumer
        state: list[TopicPartition] = []  # compacted: the whole topic is the state
        live: list[TopicPartition] = []  # market data: only what happens from now on matters
        for topic in self._codecs:
            (live if topic == self._market_topic else state).extend(await topic_partitions(consumer, topic))
        consumer.assign(state + live)
        await consumer.seek_to_beginning(*state)
        if live:
            await consumer.seek_to_end(*live)
        ends = await consumer.end_offsets(state)
        behind = [tp for tp in state if ends[tp] > 0]
        while behind:
            await self._apply(await consumer.getmany(timeout_ms=500))
            behind = [tp for tp in behind if await consumer.position(tp) < ends[tp]]
        self._task = asyncio.create_task(self._follow())

    async def stop(self) -> None:
        """Stops following; safe to call again, and before `start` (a retried start)."""
        task, consumer = self._task, self._consumer
        self._task = self._consumer = None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if consumer is not None:
            await consumer.stop()

    async def _follow(self) -> None:
        assert self._consumer is not None
        while True:
            await self._apply(await self._consumer.getmany(timeout_ms=1_000))

    async def _apply(self, batches: dict[TopicPartition, list[object]]) -> None:
        for tp, records in batches.items():
            codec = self._codecs[tp.topic]
            for record in records:
                value = getattr(record, "value", None)
                if value is None:
                    continue  # a tombstone: nothing to apply
                try:
                    if tp.topic == self._market_topic:
                        snapshot = codec.decode(MarketSnapshot, value)
                        self._inputs.market(snapshot)
                        for listener in self.on_market:
                            listener(snapshot)
                    elif tp.topic == self._mode_topic:
                        command = codec.decode(StrategyModeCommand, value)
                        self._inputs.mode(command)
                        log.info("audit: explicit mode set to %s (%s)", command.mode, command.reason or "no reason")
                    else:
                        self._inputs.health(codec.decode(HarvestHealth, value))
                except (DecodeError, ValueError) as exc:
                    self._metrics.control_errors.labels(tp.topic).inc()
                    log.warning("control message on %s ignored: %s", tp.topic, exc)
