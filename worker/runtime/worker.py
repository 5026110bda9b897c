"""The consume -> execute -> produce loop, one Kafka transaction per partition batch.

Per input partition number p the worker owns:
  * a transactional producer with id `{prefix}-p{p}` (started on assignment, which fences any
    previous owner and completes or aborts its open transaction before we read offsets);
  * the partition's `OrderTable`, rebuilt from `exec-events` partition p;
  * the outbox mark for exec-events partition p.

A batch of p is: decode -> engine -> [begin txn; send exec-events to partition p and DLQ records;
send the input offsets; commit] -> fold the staged state -> publish to the outbox. If anything
before the commit fails, the transaction is aborted, the staged state dropped and the consumer
rewound to the committed offsets, so the batch is processed again from scratch.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import TypeAlias

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.errors import IllegalStateError, KafkaError, ProducerFenced
from aiokafka.structs import ConsumerRecord

from worker.codec.errors import DecodeError, ErrorClass
from worker.contract.events import DlqRecord, ExecEvent
from worker.contract.messages import Decision, Signal
from worker.contract.orders import SourceRef
from worker.core.engine import ExecutionEngine, Prepared
from worker.core.order_table import OrderTable
from worker.core.venue_filters import VenueFiltersError, VenueNotReady
from worker.io.kafka import PRODUCER_BATCH_BYTES, BrokerUnreachable, KafkaConfig, topic_partitions
from worker.io.outbox import Outbox, OutboxLine
from worker.io.partitioner import partition_for
from worker.io.topics import TopicsFile, check_cluster_topics, codec_for
from worker.policy.pretrade import PolicyState
from worker.policy.signals import MissingFilters, signal_to_decision
from worker.runtime.control import ControlFeed
from worker.runtime.dlq import dlq_record
from worker.runtime.metrics import WorkerMetrics
from worker.runtime.mirror import OutboxMirror
from worker.runtime.orderlog import OrderLog
from worker.runtime.recovery import rebuild_partitions
from worker.runtime.settings import WorkerSettings
from worker.runtime.summary import RunSummary
from worker.runtime.transactions import TransactionWriter
from worker.runtime.venue import VenueSync

log = logging.getLogger(__name__)

# Topics the worker reads or writes; checked at start so a missing one fails fast, not silently.
WORKER_ROLES = ("decisions", "signals", "exec_events", "dlq", "strategy_mode", "harvest_health")

# Lag is an operator's number, not a control input: every 5 s is fresh enough and costs nothing.
LAG_REPORT_INTERVAL_S = 5.0
# A takeover that fails for another reason than the broker (an unreadable history) is tried this
# often, then the process exits non-zero: a partition is never left assigned without an owner.
TAKEOVER_TRIES = 3
TAKEOVER_BACKOFF_S = 0.5  # doubled per try, up to the max
TAKEOVER_BACKOFF_MAX_S = 5.0


class TakeoverFailed(RuntimeError):
    """Partitions could not be taken over; the process must exit so a supervisor restarts it."""


Record: TypeAlias = "ConsumerRecord[bytes, bytes]"


@dataclass
class PartitionOwner:
    partition: int
    producer: AIOKafkaProducer
    book: OrderTable
    policy: PolicyState  # committed; a batch works on a copy, kept only if it commits
    # Next input offset to process per topic-partition. Records below it were already committed;
    # the fetcher can hand them out again around a seek, so they are skipped here, not trusted.
    next_offset: dict[TopicPartition, int] = field(default_factory=dict)
    reconcile_due: bool = False  # a venue answer could not be committed, or a query failed


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, worker: ExecWorker) -> None:
        self._worker = worker

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self._worker.release({tp.partition for tp in revoked})

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        await self._worker.acquire(sorted({tp.partition for tp in assigned}))


class ExecWorker:
    def __init__(
        self,
        settings: WorkerSettings,
        topics: TopicsFile,
        engine: ExecutionEngine,
        metrics: WorkerMetrics | None = None,
        order_log: OrderLog | None = None,
    ) -> None:
        self.settings = settings
        self.topics = topics
        self.kafka = KafkaConfig(settings.bootstrap_servers)
        self.engine = engine
        self.metrics = metrics or WorkerMetrics()
        self.order_log = order_log or OrderLog()
        self.summary = RunSummary()
        self.outbox = Outbox(settings.outbox_dir, settings.outbox_grace_ms)
        self.exec_topic = topics.role("exec_events").name
        self.mirror = OutboxMirror(self.outbox, self.exec_topic, self.metrics, self.summary)
        self.decisions_topic = topics.role("decisions").name
        self.signals_topic = topics.role("signals").name
        self.input_topics = [self.decisions_topic, self.signals_topic]
        self.input_codecs = {
            spec.name: codec_for(spec, settings.schemas_dir, settings.max_message_bytes)
            for spec in (topics.role("decisions"), topics.role("signals"))
        }
        self.exec_codec = codec_for(topics.role("exec_events"), settings.schemas_dir)
        self.writer = TransactionWriter(
            (self.exec_topic, self.exec_codec),
            (
                topics.role("dlq").name,
                codec_for(topics.role("dlq"), settings.schemas_dir),
                topics.role("dlq").partitions,
            ),
            settings.group_id,
        )
        self.control = ControlFeed(
            self.kafka,
            engine.policy,
            self.metrics,
            (topics.role("strategy_mode").name, codec_for(topics.role("strategy_mode"), settings.schemas_dir)),
            (topics.role("harvest_health").name, codec_for(topics.role("harvest_health"), settings.schemas_dir)),
            (topics.role("market").name, codec_for(topics.role("market"), settings.schemas_dir))
            if "market" in topics.topics
            else None,
        )
        self._owners: dict[int, PartitionOwner] = {}
        # Held while a batch is processed and while partitions change hands, so that a revoke
        # waits for the in-flight transaction to finish instead of racing it.
        self._lock = asyncio.Lock()
        self._stop = asyncio.Event()
        self._consumer: AIOKafkaConsumer | None = None
        self._last_reconcile = 0.0
        self._last_lag_report = 0.0
        self.venue = VenueSync(engine, settings.venue_concurrency)
        self._input_partitions: dict[str, int] = {}
        self._fatal: BaseException | None = None

    def request_stop(self) -> None:
        self._stop.set()

    # -- lifecycle ------------------------------------------------------------------------------

    async def _check_cluster(self) -> None:
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
            for topic in self.input_topics:
                self._input_partitions[topic] = len(await topic_partitions(probe, topic))
        finally:
            await probe.stop()

    async def _start(self) -> AIOKafkaConsumer:
        """Everything before the first poll, retried as a whole for up to `broker_wait_s`.

        A worker that starts while the broker or the venue restarts waits for it: a supervisor
        restarting workers must not see them die of a broker that is coming back. Missing topics,
        refused ACLs, unreadable venue filters and bad settings still fail at once.
        """
        deadline = time.monotonic() + self.settings.broker_wait_s
        while True:
            try:
                return await self._start_once()
            except (BrokerUnreachable, KafkaError, OSError, VenueNotReady) as exc:
                await self.control.stop()
                if time.monotonic() >= deadline:
                    raise
                log.warning(
                    "%s not ready (%s); waiting for it", "venue" if isinstance(exc, VenueNotReady) else "Kafka", exc
                )
                await asyncio.sleep(1.0)

    async def _start_once(self) -> AIOKafkaConsumer:
        await self._check_cluster()
        self.outbox.remove_stale_parts()
        # Forced modes and feed health apply from the first order on.
        await self.control.start()
        # A live venue's limits and clock, before the first intent is stamped with that clock.
        start_venue = getattr(self.engine.executor, "start", None)
        if start_venue is not None:
            await start_venue()
            if self.engine.config.venue_grid is not None and getattr(self.engine.executor, "venue_filters", 0) is None:
                if not getattr(self.engine.executor, "venue_answered", True):
                    raise VenueNotReady(
                        "the venue did not answer exchangeInfo, so decisions' grids cannot be checked "
                        "(--venue-grid); is the venue reachable at --venue? (--venue-grid off trusts the decisions)"
                    )
                raise VenueFiltersError(
                    "the venue's exchangeInfo filters are unreadable, so decisions' grids cannot be checked "
                    "(--venue-grid off trusts the decisions)"
                )
        consumer = self.kafka.consumer(
            group_id=self.settings.group_id,
            isolation_level="read_committed",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            # Range assignment gives one member partition p of every input topic together,
            # which co-partitioning with exec-events requires.
            partition_assignment_strategy=(RangePartitionAssignor,),
            max_poll_records=self.settings.max_batch,
            fetch_max_wait_ms=self.settings.fetch_max_wait_ms,
            group_instance_id=self.settings.group_instance_id,
            session_timeout_ms=self.settings.session_timeout_ms,
            # Heartbeats at a third of the session timeout, as Kafka recommends.
            heartbeat_interval_ms=self.settings.session_timeout_ms // 3,
        )
        try:
            await consumer.start()
            consumer.subscribe(self.input_topics, listener=_Rebalance(self))
        except BaseException:
            await consumer.stop()
            raise
        return consumer

    async def run(self) -> RunSummary:
        consumer = await self._start()
        self._consumer = consumer
        try:
            while not self._stop.is_set():
                batches = await self._poll(consumer)
                if batches:
                    await self._process(batches)
                await self._maybe_reconcile()
                await self._maybe_report_lag(consumer)
                if not batches and self.settings.until_drained and await self._drained(consumer):
                    break
        finally:
            await consumer.stop()  # leaves the group; the revoke callback closes our producers
            await self.release(set(self._owners))
            await self.mirror.drain_all()
            await self.control.stop()
            await self.engine.executor.flush()
            await self.engine.executor.close()
        if self._fatal is not None:
            raise TakeoverFailed(f"partition takeover failed: {self._fatal}") from self._fatal
        return self.summary

    async def _poll(self, consumer: AIOKafkaConsumer) -> dict[TopicPartition, list[Record]]:
        """One batch: up to `max_batch` records, gathered for at most `commit_interval_ms`.

        With the default interval of 0 a batch is whatever one fetch returned (lowest latency);
        a longer interval fills batches under light load, so fewer, larger transactions.
        """
        batches: dict[TopicPartition, list[Record]] = await consumer.getmany(
            timeout_ms=self.settings.poll_timeout_ms, max_records=self.settings.max_batch
        )
        if not batches or self.settings.commit_interval_ms <= 0:
            return batches
        deadline = time.monotonic() + self.settings.commit_interval_ms / 1000
        count = sum(len(records) for records in batches.values())
        while count < self.settings.max_batch and (left := deadline - time.monotonic()) > 0:
            more = await consumer.getmany(timeout_ms=int(left * 1000) + 1, max_records=self.settings.max_batch - count)
            for tp, records in more.items():
                batches.setdefault(tp, []).extend(records)
                count += len(records)
        return batches

    async def acquire(self, partitions: list[int]) -> None:
        """Takes ownership of partitions, retried; on failure the worker stops and exits non-zero.

        The rebalance callback must not swallow a failure: a partition assigned to us without an
        owner would have its records skipped while its position advanced (lag 0, "drained").
        A broker that restarts during the takeover is waited for as long as a starting worker
        waits for it (`broker_wait_s`); any other failure is tried `TAKEOVER_TRIES` times.
        """
        # The group assigns partitions before this callback runs, and the fetcher may serve their
        # records meanwhile (aiokafka): paused until they have an owner, or they would be skipped.
        held = self._input_tps(partitions)
        if self._consumer is not None:
            self._consumer.pause(*held)
        deadline = time.monotonic() + self.settings.broker_wait_s
        attempt = 0
        while True:
            attempt += 1
            try:
                await self._acquire(partitions)
                if self._consumer is not None:
                    self._consumer.resume(*held)
                return
            except Exception as exc:
                broker_down = isinstance(exc, KafkaError | OSError | BrokerUnreachable)
                log.error("taking over %s failed (try %d): %s", partitions, attempt, exc)
                async with self._lock:
                    for p in partitions:
                        owner = self._owners.pop(p, None)
                        if owner is not None:
                            await owner.producer.stop()
                if time.monotonic() >= deadline if broker_down else attempt >= TAKEOVER_TRIES:
                    self._fatal = exc
                    self._stop.set()
                    if self._consumer is not None:
                        self._consumer.pause(*self._consumer.assignment())
                    return
                await asyncio.sleep(min(TAKEOVER_BACKOFF_S * 2 ** (attempt - 1), TAKEOVER_BACKOFF_MAX_S))

    def _input_tps(self, partitions: list[int]) -> list[TopicPartition]:
        return [TopicPartition(topic, p) for topic in self.input_topics for p in partitions]

    async def _acquire(self, partitions: list[int]) -> None:
        """Fence the old owner, rebuild state (orders and policy), seek."""
        async with self._lock:
            new = [p for p in partitions if p not in self._owners]
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
                await self.mirror.drain(p)  # a partition we lost to fencing and got back
            try:
                rebuilt = await rebuild_partitions(
                    self.kafka, self.exec_topic, self.exec_codec, new, self.outbox, self.engine.policy
                )
            except BaseException:
                for producer in producers.values():
                    await producer.stop()
                raise
            consumer = self._consumer
            assert consumer is not None
            for p in new:
                state = rebuilt[p]
                owner = PartitionOwner(p, producers[p], state.book, state.policy)
                self._owners[p] = owner
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
                reconciled = await self.reconcile(owner)
                log.info(
                    "partition %d acquired: %d orders from %d events, %d outbox lines republished, "
                    "%d orders reconciled",
                    p,
                    len(state.book),
                    state.events_read,
                    state.republished,
                    reconciled,
                )

    async def release(self, partitions: set[int]) -> None:
        async with self._lock:
            for p in sorted(partitions):
                owner = self._owners.pop(p, None)
                if owner is not None:
                    await owner.producer.stop()
                    log.info("partition %d released", p)
                # The next owner's catch-up starts from our mark: it must be final first.
                await self.mirror.drain(p)

    async def _maybe_report_lag(self, consumer: AIOKafkaConsumer) -> None:
        """Updates `executor_consumer_lag` every few seconds (one ListOffsets round trip)."""
        now = time.monotonic()
        if now - self._last_lag_report < LAG_REPORT_INTERVAL_S:
            return
        self._last_lag_report = now
        await self._drained(consumer)
        self.metrics.reconcile_backlog.set(sum(len(owner.book.open_orders()) for owner in self._owners.values()))
        self.metrics.in_flight.set(sum(1 for o in self._owners.values() for r in o.book.open_orders() if r.in_flight))
        self.metrics.observe_venue(self.engine.executor)

    async def _maybe_reconcile(self) -> None:
        """Every `reconcile_interval_ms`, settle resting and unknown-outcome orders with the venue."""
        if not self.engine.executor.requires_intent:
            return
        now = time.monotonic()
        if now - self._last_reconcile < self.settings.reconcile_interval_ms / 1000:
            return
        self._last_reconcile = now
        async with self._lock:
            for owner in list(self._owners.values()):
                await self.reconcile(owner)

    def in_flight(self) -> int:
        """Orders whose fate at the venue is not known yet, and cancels not yet confirmed."""
        return sum(
            1 for owner in self._owners.values() for r in owner.book.open_orders() if r.in_flight or r.cancel_requested
        )

    async def _drained(self, consumer: AIOKafkaConsumer) -> bool:
        assignment = consumer.assignment()
        if not assignment:
            return False
        behind = 0
        try:
            ends = await consumer.end_offsets(list(assignment))
            for tp in assignment:
                lag = max(0, ends[tp] - await consumer.position(tp))
                self.metrics.lag.labels(tp.topic, str(tp.partition)).set(lag)
                behind += lag
        except IllegalStateError:
            # A rebalance revoked a partition between the awaits (it killed a worker in the
            # chaos run): not drained; the next call sees the new assignment.
            return False
        # Drained: no input left, and no order whose fate at the venue is still unknown (orders
        # resting on the venue's book are not waited for).
        return behind == 0 and self.in_flight() == 0

    # -- the hot path ---------------------------------------------------------------------------

    async def _process(self, batches: dict[TopicPartition, list[Record]]) -> None:
        by_partition: dict[int, dict[TopicPartition, list[Record]]] = defaultdict(dict)
        for tp, records in batches.items():
            by_partition[tp.partition][tp] = records
        async with self._lock:
            # Partitions are independent (own producer, own state): commit them concurrently.
            await asyncio.gather(*(self._process_partition(p, parts) for p, parts in sorted(by_partition.items())))

    async def _process_partition(self, partition: int, batches: dict[TopicPartition, list[Record]]) -> None:
        owner = self._owners.get(partition)
        if owner is None:
            return  # revoked while the fetch was in flight; the new owner will read it
        fresh = {
            tp: [r for r in records if r.offset >= owner.next_offset.get(tp, 0)] for tp, records in batches.items()
        }
        batches = {tp: records for tp, records in fresh.items() if records}
        if not batches:
            return
        decided: list[ExecEvent] = []
        dead: list[DlqRecord] = []
        dropped: list[str] = []
        to_send: list[Prepared] = []
        consumed = 0
        # The policy state this batch works on: kept only if the batch commits (below), so an
        # aborted batch processed again meets the same rate wall and modes.
        policy = owner.policy.copy()
        self.engine.policy.state = policy
        first_switch = len(self.engine.mode_switches)
        for tp, records in sorted(batches.items(), key=lambda item: item[0].topic):
            for record in records:
                consumed += 1
                try:
                    decision = self._decode(record)
                    if decision is None:
                        dropped.append("signal_no_action")  # below the mode's Z: recorded, not traded
                        continue
                    source = SourceRef(topic=tp.topic, partition=tp.partition, offset=record.offset)
                    prepared = self.engine.prepare(owner.book, decision, source)
                except DecodeError as exc:
                    dead.append(dlq_record(record, exc))
                    continue
                except Exception as exc:
                    # A bug must not stop the worker or lose the message: dead-letter it with the
                    # error (and a stack trace in the log), go on with the batch.
                    log.exception("internal error on %s[%d]@%d", tp.topic, tp.partition, record.offset)
                    reason = f"internal error: {type(exc).__name__}: {exc}"[:500]
                    dead.append(dlq_record(record, DecodeError(ErrorClass.INTERNAL, reason)))
                    continue
                decided.extend(prepared.events)
                if prepared.dropped:
                    dropped.append(prepared.dropped)
                if prepared.needs_executor:
                    to_send.append(prepared)
        offsets = {tp: records[-1].offset + 1 for tp, records in batches.items()}
        # The batch's mode switches are audited only if it commits, like its policy state: an
        # aborted batch processed again meets (and would log) the same switches again. Taken out
        # before the first await, so other partitions' batches never see them.
        switches = self.engine.mode_switches[first_switch:]
        del self.engine.mode_switches[first_switch:]

        if not self.engine.executor.requires_intent:
            # No effects outside Kafka: execute now, commit everything in one transaction.
            sent = await self.venue.send(owner.book, to_send)
            events = decided + [e for result in sent for e in result.events]
            dropped += [result.dropped for result in sent if result.dropped]
            if await self._transact(owner, events, dead, offsets):
                owner.policy = policy
                self.engine.mode_switches.extend(switches)
                self._account(consumed, events, dead, dropped)
            return

        # A venue: commit the intents (SUBMITTED) with the offsets first, then send, then commit
        # the venue's answers. A crash in between leaves SUBMITTED orders that reconciliation
        # resolves by asking the venue; the input is never read again, so nothing is sent twice.
        if not await self._transact(owner, decided, dead, offsets):
            return
        owner.policy = policy
        self.engine.mode_switches.extend(switches)
        self._account(consumed, decided, dead, dropped)
        await self._send_committed(owner, to_send)

    async def _send_committed(self, owner: PartitionOwner, to_send: list[Prepared]) -> None:
        """Sends committed intents and commits the venue's answers.

        Only while we still own the partition: a worker that lost it (a pause past the session
        timeout) leaves its intents to the new owner, which resolves them after they expire.
        """
        if not to_send:
            return
        if not self._owns(owner):
            log.warning("partition %d: no longer ours; %d intents left to its owner", owner.partition, len(to_send))
            return
        sent = await self.venue.send(owner.book, to_send)
        answers = [e for result in sent for e in result.events]
        if await self._transact(owner, answers, [], {}):
            self._account(0, answers, [], [r.dropped for r in sent if r.dropped])
        else:
            owner.reconcile_due = True

    def _owns(self, owner: PartitionOwner) -> bool:
        """Still the owner: not released or fenced here, and still assigned by the group."""
        consumer = self._consumer
        return (
            self._owners.get(owner.partition) is owner
            and consumer is not None
            and TopicPartition(self.decisions_topic, owner.partition) in consumer.assignment()
        )

    async def _transact(
        self,
        owner: PartitionOwner,
        events: list[ExecEvent],
        dead: list[DlqRecord],
        offsets: dict[TopicPartition, int],
    ) -> bool:
        """Commits one transaction and folds its state; False (state rolled back) if it failed."""
        try:
            started = time.perf_counter()
            published, next_mark = await self.writer.commit(owner.producer, owner.partition, events, dead, offsets)
            self.metrics.commit_seconds.observe(time.perf_counter() - started)
        except ProducerFenced:
            log.error("partition %d: fenced by a newer owner; dropping it", owner.partition)
            owner.book.rollback()
            self._owners.pop(owner.partition, None)
            await owner.producer.stop()
            self.metrics.batches.labels("fenced").inc()
            await self.mirror.drain(owner.partition)
            return False
        except KafkaError as exc:
            log.error("partition %d: transaction failed (%s); aborting and retrying", owner.partition, exc)
            await self._abort(owner, list(offsets))
            return False
        owner.book.commit()
        owner.next_offset.update(offsets)
        lines = [OutboxLine(e.symbol, e.event_ts_ms, e.event_id, payload) for e, payload in published]
        await self.mirror.submit(owner.partition, lines, next_mark)
        return True

    async def reconcile(self, owner: PartitionOwner) -> int:
        """Settles a partition's unfinished orders with the venue (runtime/venue.py); commits the
        news, then sends the resends it decided (committed intents, like any other)."""
        owner.reconcile_due = False
        if not owner.book.open_orders() or not self._owns(owner):
            return 0
        settled = await self.venue.settle(owner.book)
        owner.reconcile_due = settled.pending
        if not settled.events:
            return 0
        if not await self._transact(owner, settled.events, [], {}):
            owner.reconcile_due = True
            return 0
        self._account(0, settled.events, [], [])
        self.metrics.reconciled.inc(len(settled.events))
        await self._send_committed(owner, [Prepared(order=order) for order in settled.resends])
        return len(settled.events)

    def _decode(self, record: Record) -> Decision | None:
        """A command from a decision or a signal; None for a signal that asks for no action."""
        codec = self.input_codecs[record.topic]
        if record.topic == self.signals_topic:
            signal = codec.decode(Signal, record.value)
            self.engine.policy.observe_gate_stats(signal.gate_reason_stats)
            modes = self.engine.policy.modes
            mode, _ = modes.choose(signal.event_ts_ms)
            try:
                decision = signal_to_decision(signal, modes.modes[mode], mode, modes.symbol_filters)
            except MissingFilters as exc:
                raise DecodeError(ErrorClass.CONFIG, str(exc)) from None
        else:
            decision = codec.decode(Decision, record.value)
        if decision is not None:
            self._check_routing(record, decision)
        allowed = self.settings.symbols
        if decision is not None and allowed is not None and decision.symbol not in allowed:
            raise DecodeError(ErrorClass.SYMBOL, f"symbol {decision.symbol} is not in the configured list")
        return decision

    def _check_routing(self, record: Record, decision: Decision) -> None:
        """A decision is executed only on the partition its symbol maps to (io/partitioner.py):
        the same decision on two partitions would otherwise be two orders."""
        partitions = self._input_partitions.get(record.topic)
        if partitions is None:
            return
        expected = partition_for(decision.symbol, partitions, self.settings.partitioner)
        if expected is not None and expected != record.partition:
            raise DecodeError(
                ErrorClass.MISROUTED,
                f"symbol {decision.symbol} belongs to partition {expected} of {record.topic} "
                f"({partitions} partitions, {self.settings.partitioner.value} partitioner) but was read "
                f"from partition {record.partition}; produce it keyed by symbol (docs/operations.md)",
            )

    async def _abort(self, owner: PartitionOwner, tps: list[TopicPartition]) -> None:
        owner.book.rollback()
        self.summary.aborted += 1
        self.metrics.batches.labels("aborted").inc()
        consumer = self._consumer
        assert consumer is not None
        for tp in tps:
            try:
                committed = await consumer.committed(tp)
                if committed is None:
                    await consumer.seek_to_beginning(tp)
                    owner.next_offset.pop(tp, None)
                else:
                    consumer.seek(tp, committed)
                    owner.next_offset[tp] = committed
            except IllegalStateError:
                # Revoked meanwhile: its next owner starts from the committed offsets anyway.
                log.info("partition %s revoked during an abort; nothing to rewind", tp)

    def _audit_mode_switches(self) -> None:
        """Every mode switch is an audit record: a log line and a counter (old, new, trigger)."""
        for switch in self.engine.mode_switches:
            log.info(
                "audit: mode %s -> %s (trigger %s) at event time %d",
                switch.old,
                switch.new,
                switch.trigger,
                switch.at_ms,
            )
            self.metrics.mode_switches.labels(switch.old, switch.new, switch.trigger).inc()
            self.summary.mode_switches += 1
        self.engine.mode_switches.clear()

    def _account(self, consumed: int, events: list[ExecEvent], dead: list[DlqRecord], dropped: list[str]) -> None:
        self._audit_mode_switches()
        self.summary.consumed += consumed
        self.summary.transactions += 1
        self.summary.add_events(events)
        self.metrics.batches.labels("committed").inc()
        self.metrics.committed(events)
        self.order_log.committed(events, dead)
        for record in dead:
            self.summary.dlq[record.error_class] += 1
            self.metrics.dlq.labels(record.error_class).inc()
        for reason in dropped:
            self.summary.dropped[reason] += 1
            self.metrics.dropped.labels(reason).inc()
