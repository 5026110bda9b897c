"""The consume -> execute -> produce loop, one Kafka transaction per partition batch.

Per input partition number p the worker owns:
  * a transactional producer with id `{prefix}-p{p}` (started on assignment, which fences any
    previous owner and completes or aborts its open transaction before we read offsets);
  * the partition's `OrderBook`, rebuilt from `exec-events` partition p;
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
from aiokafka.errors import KafkaError, ProducerFenced
from aiokafka.structs import ConsumerRecord

from worker.codec.errors import DecodeError, ErrorClass
from worker.contract.enums import OrderStatus
from worker.contract.events import DlqRecord, ExecEvent
from worker.contract.messages import Decision, Signal
from worker.contract.orders import SourceRef
from worker.execution.engine import CommandResult, ExecutionEngine, Prepared
from worker.execution.order_state import OrderBook, OrderRecord
from worker.io.kafka import PRODUCER_BATCH_BYTES, KafkaConfig
from worker.io.outbox import Outbox, OutboxLine
from worker.io.topics import TopicsFile, check_cluster_topics, codec_for
from worker.policy.signals import MissingFilters, signal_to_decision
from worker.runtime.control import ControlFeed
from worker.runtime.dlq import dlq_record
from worker.runtime.metrics import WorkerMetrics
from worker.runtime.mirror import OutboxMirror
from worker.runtime.recovery import rebuild_partitions
from worker.runtime.settings import WorkerSettings
from worker.runtime.summary import RunSummary
from worker.runtime.transactions import TransactionWriter

log = logging.getLogger(__name__)

# Topics the worker reads or writes; checked at start so a missing one fails fast, not silently.
WORKER_ROLES = ("decisions", "signals", "exec_events", "dlq", "strategy_mode", "harvest_health")

# Lag is an operator's number, not a control input: every 5 s is fresh enough and costs nothing.
LAG_REPORT_INTERVAL_S = 5.0

Record: TypeAlias = "ConsumerRecord[bytes, bytes]"


@dataclass
class PartitionOwner:
    partition: int
    producer: AIOKafkaProducer
    book: OrderBook
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
    ) -> None:
        self.settings = settings
        self.topics = topics
        self.kafka = KafkaConfig(settings.bootstrap_servers)
        self.engine = engine
        self.metrics = metrics or WorkerMetrics()
        self.summary = RunSummary()
        self.outbox = Outbox(settings.outbox_dir)
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

    def request_stop(self) -> None:
        self._stop.set()

    # -- lifecycle ------------------------------------------------------------------------------

    async def run(self) -> RunSummary:
        await self.kafka.check_reachable()
        async with self.kafka.admin_session() as admin:
            await check_cluster_topics(admin, self.topics, WORKER_ROLES)
        self.outbox.remove_stale_parts()
        # Forced modes and feed health apply from the first order on.
        await self.control.start()
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
        self._consumer = consumer
        await consumer.start()
        consumer.subscribe(self.input_topics, listener=_Rebalance(self))
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
        """Takes ownership of partitions: fence the old owner, rebuild state, seek."""
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
            rebuilt = await rebuild_partitions(self.kafka, self.exec_topic, self.exec_codec, new, self.outbox)
            consumer = self._consumer
            assert consumer is not None
            for p in new:
                state = rebuilt[p]
                owner = PartitionOwner(p, producers[p], state.book)
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
        return sum(
            1 for owner in self._owners.values() for r in owner.book.open_orders() if r.status is OrderStatus.SUBMITTED
        )

    async def _drained(self, consumer: AIOKafkaConsumer) -> bool:
        assignment = consumer.assignment()
        if not assignment:
            return False
        ends = await consumer.end_offsets(list(assignment))
        behind = 0
        for tp in assignment:
            lag = max(0, ends[tp] - await consumer.position(tp))
            self.metrics.lag.labels(tp.topic, str(tp.partition)).set(lag)
            behind += lag
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
        for tp, records in sorted(batches.items(), key=lambda item: item[0].topic):
            for record in records:
                consumed += 1
                try:
                    decision = self._decode(record)
                except DecodeError as exc:
                    dead.append(dlq_record(record, exc))
                    continue
                if decision is None:
                    dropped.append("signal_no_action")  # below the mode's Z: recorded, not traded
                    continue
                source = SourceRef(topic=tp.topic, partition=tp.partition, offset=record.offset)
                try:
                    prepared = self.engine.prepare(owner.book, decision, source)
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

        if not self.engine.executor.requires_intent:
            # No effects outside Kafka: execute now, commit everything in one transaction.
            sent = await self._send(owner, to_send)
            events = decided + [e for result in sent for e in result.events]
            dropped += [result.dropped for result in sent if result.dropped]
            if await self._transact(owner, events, dead, offsets):
                self._account(consumed, events, dead, dropped)
            return

        # A venue: commit the intents (SUBMITTED) with the offsets first, then send, then commit
        # the venue's answers. A crash in between leaves SUBMITTED orders that reconciliation
        # resolves by asking the venue; the input is never read again, so nothing is sent twice.
        if not await self._transact(owner, decided, dead, offsets):
            return
        self._account(consumed, decided, dead, dropped)
        if to_send:
            sent = await self._send(owner, to_send)
            answers = [e for result in sent for e in result.events]
            if await self._transact(owner, answers, [], {}):
                self._account(0, answers, [], [r.dropped for r in sent if r.dropped])
            else:
                owner.reconcile_due = True

    async def _send(self, owner: PartitionOwner, prepared: list[Prepared]) -> list[CommandResult]:
        """Executes orders concurrently (bounded), results in input order."""
        if not prepared:
            return []
        if not self.engine.executor.requires_intent:
            # Nothing to wait for (the backtest answers at once): a plain loop is ~2x cheaper.
            return [await self.engine.send(owner.book, item) for item in prepared]
        limit = asyncio.Semaphore(self.settings.venue_concurrency)

        async def one(item: Prepared) -> CommandResult:
            async with limit:
                return await self.engine.send(owner.book, item)

        return list(await asyncio.gather(*(one(item) for item in prepared)))

    async def _transact(
        self,
        owner: PartitionOwner,
        events: list[ExecEvent],
        dead: list[DlqRecord],
        offsets: dict[TopicPartition, int],
    ) -> bool:
        """Commits one transaction and folds its state; False (state rolled back) if it failed."""
        try:
            published, next_mark = await self.writer.commit(owner.producer, owner.partition, events, dead, offsets)
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
        """Asks the venue about every unfinished order of a partition; commits what changed.

        An order still SUBMITTED that the venue does not have was lost in a crash between the
        intent and the send. Once the venue's recvWindow has passed (no request sent before the
        crash can be accepted any more) it is rebuilt from its source decision and sent again.
        """
        records = owner.book.open_orders()
        owner.reconcile_due = False
        if not records:
            return 0
        limit = asyncio.Semaphore(self.settings.venue_concurrency)
        now_ms = time.time_ns() // 1_000_000

        async def one(record: OrderRecord) -> tuple[ExecEvent, ...]:
            coid = record.last.client_order_id
            async with limit:
                try:
                    outcome = await self.engine.reconcile(owner.book, coid)
                    if not outcome.missing:
                        return outcome.events
                    if record.status is not OrderStatus.SUBMITTED:
                        return self.engine.give_up(owner.book, coid, "not_at_venue")
                    if now_ms - (record.last.sent_ts_ms or 0) < self.settings.resend_after_ms:
                        owner.reconcile_due = True
                        return ()  # a request sent before a crash could still arrive: wait
                    decision = await self._source_decision(record.last.source)
                    if decision is None:
                        return self.engine.give_up(owner.book, coid, "not_at_venue_source_gone")
                    result = await self.engine.resend(owner.book, decision, record.last.source)
                    if result.dropped:
                        owner.reconcile_due = True
                    return result.events
                except Exception as exc:  # the venue is unreachable: try again next round
                    log.warning("reconcile %s failed: %s", coid, exc)
                    owner.reconcile_due = True
                    return ()

        news = [e for events in await asyncio.gather(*(one(r) for r in records)) for e in events]
        if news and await self._transact(owner, news, [], {}):
            self._account(0, news, [], [])
            self.metrics.reconciled.inc(len(news))
        return len(news)

    async def _source_decision(self, source: SourceRef) -> Decision | None:
        """Reads one input record again by its coordinates (None if gone or unreadable)."""
        consumer = self.kafka.consumer(group_id=None, isolation_level="read_committed", enable_auto_commit=False)
        await consumer.start()
        try:
            tp = TopicPartition(source.topic, source.partition)
            consumer.assign([tp])
            consumer.seek(tp, source.offset)
            batch = await consumer.getmany(tp, timeout_ms=2_000, max_records=1)
            for record in batch.get(tp, []):
                if record.offset == source.offset:
                    return self._decode(record)
            return None
        except DecodeError:
            return None
        finally:
            await consumer.stop()

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
        allowed = self.settings.symbols
        if decision is not None and allowed is not None and decision.symbol not in allowed:
            raise DecodeError(ErrorClass.SYMBOL, f"symbol {decision.symbol} is not in the configured list")
        return decision

    async def _abort(self, owner: PartitionOwner, tps: list[TopicPartition]) -> None:
        owner.book.rollback()
        self.summary.aborted += 1
        self.metrics.batches.labels("aborted").inc()
        consumer = self._consumer
        assert consumer is not None
        for tp in tps:
            committed = await consumer.committed(tp)
            if committed is None:
                await consumer.seek_to_beginning(tp)
                owner.next_offset.pop(tp, None)
            else:
                consumer.seek(tp, committed)
                owner.next_offset[tp] = committed

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
        for record in dead:
            self.summary.dlq[record.error_class] += 1
            self.metrics.dlq.labels(record.error_class).inc()
        for reason in dropped:
            self.summary.dropped[reason] += 1
            self.metrics.dropped.labels(reason).inc()
