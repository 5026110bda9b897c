"""The consume -> execute -> produce loop, one Kafka transaction per partition batch.

The worker only moves bytes: records from Kafka to the core (core/batch.py decides everything),
commands to the venue (runtime/venue.py waits on it), events to Kafka (runtime/transactions.py)
and the outbox (runtime/mirror.py). Partition ownership is runtime/partition.py.

A batch of partition p is: plan (pure) -> [begin txn; send exec-events to partition p and DLQ
records; send the input offsets; commit] -> keep the staged state -> publish to the outbox. With a
venue, the committed events are intents; they are sent after the commit and the venue's answers
committed in a second transaction. If anything before a commit fails, the transaction is aborted,
the staged state dropped and the consumer rewound to the committed offsets, so the batch is
processed again from scratch. Each owned partition runs its batches in its own lane
(runtime/lanes.py), so the loop polls on while transactions commit.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import IllegalStateError, KafkaError, ProducerFenced

from worker.contract.events import DlqRecord, ExecEvent
from worker.core.batch import plan_batch
from worker.core.engine import ExecutionEngine, Prepared
from worker.core.intake import Intake
from worker.io.kafka import KafkaConfig
from worker.io.outbox import Outbox, OutboxLine
from worker.io.partitioner import InputRouting
from worker.io.topics import TopicsFile, codec_for
from worker.runtime.accounting import Accounting
from worker.runtime.control import ControlFeed
from worker.runtime.lanes import Gathered, Lanes, Records
from worker.runtime.metrics import WorkerMetrics
from worker.runtime.mirror import OutboxMirror
from worker.runtime.orderlog import OrderLog
from worker.runtime.partition import ExecHistory, PartitionOwner, Partitions
from worker.runtime.settings import WorkerSettings
from worker.runtime.shadow import ShadowDriver, send_alongside
from worker.runtime.startup import Startup
from worker.runtime.summary import RunSummary
from worker.runtime.transactions import TransactionWriter
from worker.runtime.venue import VenueSync, round_trips

log = logging.getLogger(__name__)

# Lag is an operator's number, not a control input: every 5 s is fresh enough and costs nothing.
LAG_REPORT_INTERVAL_S = 5.0


class TakeoverFailed(RuntimeError):
    """Partitions could not be taken over; the process must exit so a supervisor restarts it."""


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
        self.engine = engine
        self.metrics = metrics or WorkerMetrics()
        self.summary = RunSummary()
        self.accounting = Accounting(self.summary, self.metrics, order_log or OrderLog())
        self.kafka = KafkaConfig(settings.bootstrap_servers)
        self.venue = VenueSync(engine, settings.venue_concurrency)

        decisions, signals = topics.role("decisions").name, topics.role("signals").name
        self.input_topics = [decisions, signals]
        input_codecs = {
            name: codec_for(topics.role(role), settings.schemas_dir, settings.max_message_bytes)
            for name, role in ((decisions, "decisions"), (signals, "signals"))
        }
        self.intake = Intake(input_codecs, signals, engine.policy, symbols=settings.symbols)
        exec_spec, dlq_spec = topics.role("exec_events"), topics.role("dlq")
        exec_codec = codec_for(exec_spec, settings.schemas_dir)
        self.writer = TransactionWriter(
            (exec_spec.name, exec_codec),
            (dlq_spec.name, codec_for(dlq_spec, settings.schemas_dir), dlq_spec.partitions),
            settings.group_id,
        )
        self.control = ControlFeed.for_topics(self.kafka, engine.policy, self.metrics, topics, settings.schemas_dir)
        outbox = Outbox(settings.outbox_dir, settings.outbox_grace_ms)
        self.mirror = OutboxMirror(outbox, exec_spec.name, self.metrics, self.summary)
        history = ExecHistory(exec_spec.name, exec_codec, outbox, self.mirror)
        self.partitions = Partitions(
            settings, self.kafka, self.input_topics, history, engine.policy, self.reconcile, self.request_stop
        )
        self.startup = Startup(settings, self.kafka, topics, self.input_topics, engine, self.control, outbox)
        self.lanes = Lanes(self._process_partition, self.request_stop, self.partitions, settings.max_batch)
        self._stop = asyncio.Event()
        self._last_reconcile = 0.0
        self._last_lag_report = 0.0
        self.shadow: ShadowDriver | None = None  # `run --shadow` (runtime/shadow.py: attach)

    def request_stop(self) -> None:
        self._stop.set()

    async def run(self) -> RunSummary:
        consumer, counts = await self.startup.start(self.partitions.listener())
        self.intake = replace(self.intake, routing=InputRouting(counts, self.settings.partitioner))
        self.partitions.consumer = consumer
        try:
            while not self._stop.is_set():
                gathered = await self._poll(consumer)
                if gathered.count:
                    self.lanes.dispatch(gathered)
                self._maybe_reconcile()
                await self._maybe_report_lag(consumer)
                if not gathered.count and self.settings.until_drained and await self._drained(consumer):
                    break
        finally:
            await self.lanes.close()  # the transactions in flight finish; nothing queued is used
            await consumer.stop()  # leaves the group; the revoke callback closes our producers
            await self.partitions.release(set(self.partitions.owners))
            await self.mirror.drain_all()
            await self.control.stop()
            await self.engine.executor.flush()
            await self.engine.executor.close()
        if self.lanes.failure is not None:
            raise self.lanes.failure
        if self.partitions.fatal is not None:
            fatal = self.partitions.fatal
            raise TakeoverFailed(f"partition takeover failed: {fatal}") from fatal
        return self.summary

    async def _poll(self, consumer: AIOKafkaConsumer) -> Gathered:
        """One batch: up to `max_batch` records, gathered for at most `commit_interval_ms`.

        With the default interval of 0 a batch is whatever one fetch returned (lowest latency);
        a longer interval fills batches under light load, so fewer, larger transactions. Each
        fetch's records are stamped with their owner and epoch as it returns (`Gathered`).
        """
        limit, owners = self.settings.max_batch, self.partitions.owners
        gathered = Gathered()
        gathered.add(await consumer.getmany(timeout_ms=self.settings.poll_timeout_ms, max_records=limit), owners)
        if not gathered.count or self.settings.commit_interval_ms <= 0:
            return gathered
        deadline = time.monotonic() + self.settings.commit_interval_ms / 1000
        while gathered.count < limit and (left := deadline - time.monotonic()) > 0:
            more = await consumer.getmany(timeout_ms=int(left * 1000) + 1, max_records=limit - gathered.count)
            gathered.add(more, owners)
        return gathered

    async def _maybe_report_lag(self, consumer: AIOKafkaConsumer) -> None:
        """Updates `executor_consumer_lag` every few seconds (one ListOffsets round trip)."""
        now = time.monotonic()
        if now - self._last_lag_report < LAG_REPORT_INTERVAL_S:
            return
        self._last_lag_report = now
        await self._drained(consumer)
        tables = [owner.table for owner in self.partitions.owners.values()]
        self.metrics.reconcile_backlog.set(sum(len(table.open_orders()) for table in tables))
        self.metrics.in_flight.set(sum(1 for table in tables for r in table.open_orders() if r.in_flight))
        self.metrics.observe_venue(self.engine.executor)

    def _maybe_reconcile(self) -> None:
        """Every `reconcile_interval_ms`, settle resting and unknown-outcome orders with the venue:
        in each partition's lane, after its batch in flight (the loop never waits for it)."""
        if not self.engine.executor.requires_intent:
            return
        now = time.monotonic()
        if now - self._last_reconcile < self.settings.reconcile_interval_ms / 1000:
            return
        self._last_reconcile = now
        for owner in list(self.partitions.owners.values()):
            self.lanes.request(owner, self.reconcile)

    def in_flight(self) -> int:
        """Orders whose fate at the venue is not known yet, and cancels not yet confirmed."""
        owners = self.partitions.owners.values()
        return sum(1 for o in owners for r in o.table.open_orders() if r.in_flight or r.cancel_requested)

    async def _drained(self, consumer: AIOKafkaConsumer) -> bool:
        """No input left, and no order whose fate at the venue is still unknown (orders resting on
        the venue's book are not waited for)."""
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
        # A takeover in flight (its owner not there yet, or settling its orders with the venue,
        # which can resend) is not drained: the chaos run once stopped mid-takeover, leaving the
        # resends it had just made unresolved.
        settled = self.partitions.settled(consumer.assignment())
        return behind == 0 and settled and self.lanes.idle() and self.in_flight() == 0

    # -- the hot path ---------------------------------------------------------------------------

    async def _process_partition(self, owner: PartitionOwner, batches: Records) -> None:
        """One transaction of a partition (its lane holds `owner.busy`)."""
        fresh = {tp: [r for r in rs if r.offset >= owner.next_offset.get(tp, 0)] for tp, rs in batches.items()}
        batches = {tp: records for tp, records in sorted(fresh.items(), key=lambda item: item[0].topic) if records}
        if not batches:
            return
        records = [record for rs in batches.values() for record in rs]
        plan = plan_batch(self.engine, self.intake, owner.table, owner.policy, records)
        offsets = {tp: rs[-1].offset + 1 for tp, rs in batches.items()}
        if not self.engine.executor.requires_intent:
            # No effects outside Kafka: execute now, commit everything in one transaction.
            sent = await send_alongside(self.shadow, self.venue, self.writer, owner, plan.to_send)  # shadow hook
            events = plan.events + [e for result in sent for e in result.events]
            dropped = plan.dropped + [result.dropped for result in sent if result.dropped]
            if await self._transact(owner, events, plan.dead, offsets):
                owner.policy = plan.policy
                self.accounting.committed(plan.consumed, events, plan.dead, dropped, plan.switches)
            return
        # A venue: commit the intents (SUBMITTED) with the offsets first, then send, then commit
        # the venue's answers. A crash in between leaves SUBMITTED orders that reconciliation
        # resolves by asking the venue; the input is never read again, so nothing is sent twice.
        if not await self._transact(owner, plan.events, plan.dead, offsets):
            return
        owner.policy = plan.policy
        self.accounting.committed(plan.consumed, plan.events, plan.dead, plan.dropped, plan.switches)
        await self._send_committed(owner, plan.to_send)

    async def _send_committed(self, owner: PartitionOwner, to_send: list[Prepared]) -> None:
        """Sends committed intents and commits the venue's answers.

        Only while we still own the partition: a worker that lost it (a pause past the session
        timeout) leaves its intents to the new owner, which resolves them after they expire.
        """
        if not to_send:
            return
        if not self.partitions.owns(owner):
            log.warning("partition %d: no longer ours; %d intents left to its owner", owner.partition, len(to_send))
            return
        sent = await send_alongside(self.shadow, self.venue, self.writer, owner, to_send)  # shadow hook (issue 12)
        answers = [e for result in sent for e in result.events]
        if await self._transact(owner, answers, [], {}):
            trips = round_trips(to_send, sent)
            self.accounting.committed(0, answers, dropped=[r.dropped for r in sent if r.dropped], round_trips=trips)
        else:
            owner.reconcile_due = True

    async def _transact(
        self, owner: PartitionOwner, events: list[ExecEvent], dead: list[DlqRecord], offsets: dict[TopicPartition, int]
    ) -> bool:
        """Commits one transaction and keeps its state; False (state rolled back) if it failed."""
        try:
            started = time.perf_counter()
            published, next_mark = await self.writer.commit(owner.producer, owner.partition, events, dead, offsets)
            self.metrics.commit_seconds.observe(time.perf_counter() - started)
        except ProducerFenced:
            self.metrics.batches.labels("fenced").inc()
            await self.partitions.drop_fenced(owner)
            return False
        except KafkaError as exc:
            log.error("partition %d: transaction failed (%s); aborting and retrying", owner.partition, exc)
            self.accounting.aborted()
            self.partitions.rewind(owner)
            return False
        owner.table.commit()
        owner.next_offset.update(offsets)
        lines = [OutboxLine(e.symbol, e.event_ts_ms, e.event_id, payload) for e, payload in published]
        await self.mirror.submit(owner.partition, lines, next_mark)
        return True

    async def reconcile(self, owner: PartitionOwner) -> int:
        """Settles a partition's unfinished orders with the venue (runtime/venue.py); commits the
        news, then sends the resends it decided (committed intents, like any other)."""
        owner.reconcile_due = False
        if not owner.table.open_orders() or not self.partitions.owns(owner):
            return 0
        settled = await self.venue.settle(owner.table)
        owner.reconcile_due = settled.pending
        if not settled.events:
            return 0
        if not await self._transact(owner, settled.events, [], {}):
            owner.reconcile_due = True
            return 0
        self.accounting.committed(0, settled.events)
        self.metrics.reconciled.inc(len(settled.events))
        await self._send_committed(owner, [Prepared(order=order) for order in settled.resends])
        return len(settled.events)
