"""Shadow execution (`execworker run --shadow SPEC`): a second executor beside the primary.

The shadow receives every command the primary hands to its executor, in the same order: the
orders that passed the primary's pure phase (rounded, with their client order id, through the
gates) and its cancels and amends. Gates, modes and the rate wall are the primary's alone: the
shadow never runs the policy, so it cannot change the primary's policy state, and a DENIED or
THROTTLED order never reaches either executor. It has its own `ExecutionEngine` (its own
executor) and its own per-partition order table, so it never touches the primary's orders or
offsets either.

Its order table is started fresh when this worker takes a partition over (not rebuilt from
`exec-shadow.v1`): the shadow is a measurement, and a cancel of an order placed before the
takeover is simply dropped by the shadow (its target is unknown there). An order is shadowed once (a
resend, or a batch processed again after an abort, is recognised by its client order id in the
staged table).

Each order gives one shadow event (the shadow executor's first answer; a venue shadow is sent
without an intent: it holds no money, so there is nothing to reconcile), published to the
`shadow_events` role (`exec-shadow.v1`, co-partitioned with exec-events, the exec-event
schema) in the same Kafka transaction as the primary's events for that batch: the answers'
transaction with a venue primary, the batch's only one with a backtest primary.

A shadow failure never stops the primary and slows it by at most `timeout_s`: the shadow runs
concurrently with the primary's send; an order the shadow has not answered by then (its venue
down, an exception) is counted as `executor_shadow_mismatch_total{field="unavailable"}` and
logged. Comparison (worker/core/parity.py) happens only once the transaction committed.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from worker.codec.wire import WireCodec
from worker.contract.enums import OrderStatus
from worker.contract.events import ExecEvent
from worker.contract.executor import IExecutor
from worker.contract.messages import MarketSnapshot
from worker.contract.orders import AmendResult, CancelResult, ExecResult, OrderCtx
from worker.core.engine import DEFAULT_RECV_WINDOW_MS, CommandResult, ExecutionEngine, Prepared
from worker.core.order_table import OrderTable
from worker.core.parity import PARITY_WINDOW, ParityField, ParityWindow, compare
from worker.runtime.metrics import WorkerMetrics
from worker.runtime.transactions import TransactionWriter
from worker.runtime.venue import VenueSync, execute

if TYPE_CHECKING:
    from worker.runtime.partition import PartitionOwner
    from worker.runtime.worker import ExecWorker

log = logging.getLogger(__name__)

SHADOW_ROLE = "shadow_events"
# The most the shadow may add to a batch's send: a venue shadow's normal round trip fits well.
DEFAULT_SHADOW_TIMEOUT_S = 0.5
# Concurrent requests to a venue shadow (the primary's default venue concurrency).
SHADOW_CONCURRENCY = 16


class ShadowSpecError(ValueError):
    """A `--shadow` value that cannot be used; the message says what to write instead."""


@dataclass(frozen=True, slots=True)
class ShadowSpec:
    kind: str  # "backtest" or "venue"
    target: str  # the fill model, or the venue's base URL


def parse_shadow_spec(text: str) -> ShadowSpec:
    kind, sep, target = text.partition(":")
    hint = "use backtest:MODEL (e.g. backtest:quote) or venue:URL (e.g. venue:http://127.0.0.1:8766)"
    if not sep or not target:
        raise ShadowSpecError(f"--shadow {text!r}: {hint}")
    if kind == "backtest":
        from worker.core.fills import fill_model

        try:
            fill_model(target)
        except ValueError as exc:
            raise ShadowSpecError(f"--shadow {text!r}: {exc}") from None
        return ShadowSpec(kind, target)
    if kind == "venue":
        url = urlparse(target)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ShadowSpecError(f"--shadow {text!r}: the venue URL must be http(s)://HOST[:PORT]; {hint}")
        return ShadowSpec(kind, target.rstrip("/"))
    raise ShadowSpecError(f"--shadow {text!r}: unknown kind {kind!r}; {hint}")


class VenueShadow:
    """A live executor used as a shadow: sent without an intent (`requires_intent` False), each
    order stamped with the shadow venue's own clock; cancels find the order's symbol here."""

    requires_intent = False

    def __init__(self, venue: IExecutor) -> None:
        self.venue = venue
        self.name = venue.name
        self._symbols: dict[str, str] = {}  # orders the venue may still hold: coid -> symbol

    async def start(self) -> None:
        start = getattr(self.venue, "start", None)
        if start is not None:
            await start()

    async def submit(self, order: OrderCtx) -> ExecResult:
        clock = getattr(self.venue, "clock", None)
        window = getattr(self.venue, "recv_window_ms", None) or DEFAULT_RECV_WINDOW_MS
        stamp = {"sent_ts_ms": clock.now_ms() if clock is not None else order.sent_ts_ms, "recv_window_ms": window}
        result = await self.venue.submit(order.model_copy(update={**stamp, "attempt": 1}))
        if result.status in (OrderStatus.ACCEPTED, OrderStatus.PARTIALLY_FILLED, OrderStatus.UNKNOWN):
            self._symbols[order.client_order_id] = order.symbol
        return result

    async def cancel(self, client_order_id: str) -> CancelResult:
        symbol = self._symbols.pop(client_order_id, None)
        return await self.venue.cancel(client_order_id, symbol)  # type: ignore[call-arg]

    async def amend(self, client_order_id: str, new_px: Decimal | None, new_qty: Decimal | None) -> AmendResult:
        return await self.venue.amend(client_order_id, new_px, new_qty)

    async def query(self, client_order_id: str, symbol: str) -> ExecResult | None:
        return await self.venue.query(client_order_id, symbol)

    async def flush(self) -> None:
        await self.venue.flush()

    async def close(self) -> None:
        await self.venue.close()


@dataclass
class _Table:
    owner: object  # the partition's owner when this table started: a new owner starts afresh
    book: OrderTable = field(default_factory=OrderTable)


@dataclass
class ShadowBatch:
    """What the shadow did with one batch: its events (for the transaction), settled after it."""

    driver: ShadowDriver
    book: OrderTable
    pairs: list[tuple[OrderCtx, ExecEvent | None, ExecEvent | None]]  # order, primary, shadow answer
    events: list[ExecEvent]

    def settle(self) -> None:
        """After the transaction committed: keep the shadow's staged orders and compare. (A batch
        whose transaction failed is never settled: its staged orders are dropped at the
        partition's next batch, `ShadowDriver.book`.)"""
        self.book.commit()
        self.driver.record(self.pairs)


class ShadowDriver:
    def __init__(
        self,
        engine: ExecutionEngine,
        metrics: WorkerMetrics,
        topic: tuple[str, WireCodec],
        timeout_s: float = DEFAULT_SHADOW_TIMEOUT_S,
        window: int = PARITY_WINDOW,
    ) -> None:
        self.engine = engine
        self.metrics = metrics
        self.topic = topic
        self.timeout_s = timeout_s
        self.window = ParityWindow(window)
        self._tables: dict[int, _Table] = {}
        self.compared = 0  # since the start: orders compared, and those that differed
        self.mismatched = 0
        self.metrics.shadow_parity.set(self.window.ratio())

    async def start(self) -> None:
        """Starts a venue shadow (clock, filters); a failure is logged, never fatal."""
        start = getattr(self.engine.executor, "start", None)
        if start is None:
            return
        try:
            await asyncio.wait_for(start(), self.timeout_s * 10)
        except Exception as exc:
            log.error("shadow executor did not start (%s); its answers count as unavailable until it answers", exc)

    async def close(self) -> None:
        try:
            await self.engine.executor.flush()
            await self.engine.executor.close()
        except Exception as exc:
            log.warning("shadow executor close failed: %s", exc)

    def book(self, partition: int, owner: object) -> OrderTable:
        table = self._tables.get(partition)
        if table is None or table.owner is not owner:
            table = self._tables[partition] = _Table(owner)
        table.book.rollback()  # what an earlier batch staged without committing (no-op otherwise)
        return table.book

    async def alongside(
        self,
        partition: int,
        owner: object,
        primary: Awaitable[list[CommandResult]],
        to_send: Sequence[Prepared],
    ) -> tuple[list[CommandResult], ShadowBatch]:
        """Runs the primary's send and the shadow's (bounded by `timeout_s`) at the same time."""
        book = self.book(partition, owner)
        answers: dict[int, CommandResult] = {}
        sent, _ = await asyncio.gather(primary, self._bounded(book, to_send, answers))
        pairs: list[tuple[OrderCtx, ExecEvent | None, ExecEvent | None]] = []
        events: list[ExecEvent] = []
        for index, (item, result) in enumerate(zip(to_send, sent, strict=True)):
            mine = answers.get(index)
            if mine is not None:
                events.extend(mine.events)
            if item.order is None:
                continue  # a cancel or amend: shadowed, not compared
            coid = item.order.client_order_id
            if mine is not None and not mine.events and mine.dropped == "shadowed":
                continue  # shadowed already (a resend): compared then
            first = _answer(result.events, coid)
            if first is None:
                continue  # the primary said nothing new about it: nothing to compare
            pairs.append((item.order, first, _answer(mine.events, coid) if mine is not None else None))
        return sent, ShadowBatch(self, book, pairs, events)

    async def _bounded(self, book: OrderTable, to_send: Sequence[Prepared], answers: dict[int, CommandResult]) -> None:
        try:
            await asyncio.wait_for(self._send(book, to_send, answers), self.timeout_s)
        except TimeoutError:
            log.warning(
                "shadow: %d of %d commands unanswered after %.2f s",
                len(to_send) - len(answers),
                len(to_send),
                self.timeout_s,
            )
        except Exception:
            log.exception("shadow failed on a batch of %d commands", len(to_send))

    async def _send(self, book: OrderTable, to_send: Sequence[Prepared], answers: dict[int, CommandResult]) -> None:
        async def one(index: int, item: Prepared) -> None:
            if item.order is not None and book.get(item.order.client_order_id) is not None:
                answers[index] = CommandResult(dropped="shadowed")
                return
            command = Prepared(order=item.order) if item.order is not None else Prepared(change=item.change)
            try:
                answers[index] = await execute(self.engine, book, command)
            except Exception as exc:
                log.warning("shadow: command %d failed (%s: %s)", index, type(exc).__name__, exc)

        if isinstance(self.engine.executor, VenueShadow):
            limit = asyncio.Semaphore(SHADOW_CONCURRENCY)

            async def bounded(index: int, item: Prepared) -> None:
                async with limit:
                    await one(index, item)

            await asyncio.gather(*(bounded(i, item) for i, item in enumerate(to_send)))
        else:
            for index, item in enumerate(to_send):  # in the primary's order, as it arrived
                await one(index, item)

    def record(self, pairs: Sequence[tuple[OrderCtx, ExecEvent | None, ExecEvent | None]]) -> None:
        """Compares committed pairs: the parity window and the counters (one increment each per batch)."""
        mismatches: Counter[ParityField] = Counter()
        for order, primary, shadow in pairs:
            assert primary is not None
            fields = compare(primary, shadow, order.tick_size)
            self.window.add(not fields)
            if not fields:
                continue
            self.mismatched += 1
            mismatches.update(fields)
            if ParityField.UNAVAILABLE in fields:
                log.warning("shadow: no answer for order %s", order.client_order_id)
            else:
                log.info(
                    "shadow mismatch on %s (%s): primary %s %s fill %s, shadow %s %s fill %s",
                    order.client_order_id,
                    ",".join(f.value for f in fields),
                    primary.status.value,
                    primary.reason,
                    primary.px_fill,
                    shadow.status.value if shadow else None,
                    shadow.reason if shadow else None,
                    shadow.px_fill if shadow else None,
                )
        self.compared += len(pairs)
        self.metrics.shadow_compared.inc(len(pairs))
        for name, count in mismatches.items():
            self.metrics.shadow_mismatch.labels(name.value).inc(count)
        self.metrics.shadow_parity.set(self.window.ratio())


def _answer(events: Sequence[ExecEvent], client_order_id: str) -> ExecEvent | None:
    """The first answer about an order among a send's events (intents are not answers)."""
    for event in events:
        if event.client_order_id == client_order_id and not (
            event.status is OrderStatus.SUBMITTED or event.status is OrderStatus.PENDING_CANCEL
        ):
            return event
    return None


async def send_alongside(
    driver: ShadowDriver | None,
    venue: VenueSync,
    writer: TransactionWriter,
    owner: PartitionOwner,
    to_send: Sequence[Prepared],
) -> list[CommandResult]:
    """The worker's hook in place of `venue.send`: the primary's send, with the shadow's beside it
    when there is one; the shadow's events are staged for the partition's next transaction."""
    if driver is None or not to_send:
        return await venue.send(owner.table, to_send)
    sent, batch = await driver.alongside(owner.partition, owner, venue.send(owner.table, to_send), to_send)
    writer.stage_shadow(owner.partition, batch.events, batch.settle)
    return sent


def attach(worker: ExecWorker, driver: ShadowDriver, market: object | None = None) -> None:
    """Wires a shadow into a worker: the hook's driver, the writer's topic, the market feed."""
    worker.shadow = driver
    worker.writer.shadow_events = driver.topic
    add = getattr(market, "add", None)
    if add is None:
        return
    counted = worker.metrics.shadow_market

    def take(snapshot: MarketSnapshot) -> None:
        add(snapshot)
        counted.inc()

    worker.control.on_market.append(take)
