"""Every wait on the venue: sending committed intents, and settling orders that are not final.

The engine decides; this module only asks the venue and hands the answers back. Settling runs
in rounds (`reconcile_interval_ms`), within the venue's request-weight budget:

  * an order in flight (an intent with no word from the venue) is queried only once every copy
    of its request has certainly expired on the venue's clock; the engine then records the
    venue's state, or a resend as a new intent (sent by the caller after it is committed);
  * orders the venue has confirmed and that are still open are settled with one `openOrders`
    request per symbol (weight 6) instead of one query per order (weight 4 each): an order
    missing from that list has closed, and only it is queried for its final state;
  * an open order with a committed cancel intent gets its DELETE again until the venue
    confirms the cancel or the order ends.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from worker.contract.enums import Action
from worker.contract.events import ExecEvent
from worker.contract.messages import Decision
from worker.contract.orders import AmendResult, CancelResult, ExecResult, OrderCtx, SourceRef
from worker.contract.state_machine import is_terminal
from worker.core.engine import CommandResult, ExecutionEngine, Prepared
from worker.core.order_table import OrderRecord, OrderTable
from worker.io.binance.clock import VenueClock

log = logging.getLogger(__name__)


class LiveVenue(Protocol):
    """What settling needs of a live executor beyond `IExecutor`."""

    clock: VenueClock

    async def query(self, client_order_id: str, symbol: str) -> ExecResult | None: ...

    async def open_orders(self, symbol: str) -> dict[str, ExecResult]: ...

    async def cancel(self, client_order_id: str, symbol: str | None = None) -> CancelResult: ...


@dataclass
class Settled:
    """One reconciliation round of a partition: news to commit, then resends to send."""

    events: list[ExecEvent] = field(default_factory=list)
    resends: list[OrderCtx] = field(default_factory=list)
    pending: bool = False  # something is still waiting (an unexpired request, a failed query)


async def execute(engine: ExecutionEngine, book: OrderTable, prepared: Prepared) -> CommandResult:
    """Hands a prepared command to the executor and gives its answer to the engine."""
    if prepared.order is not None:
        result = await engine.executor.submit(prepared.order)
        return CommandResult(engine.submitted(book, prepared.order, result), round_trip_ms=result.round_trip_ms)
    if prepared.change is not None:
        return await _change(engine, book, prepared.change)
    return CommandResult(dropped=prepared.dropped)


def round_trips(sent: Sequence[Prepared], results: Sequence[CommandResult]) -> dict[str, int]:
    """The venue's answer time of each new order sent (no retry backoff), by client order id."""
    return {
        item.order.client_order_id: result.round_trip_ms
        for item, result in zip(sent, results, strict=True)
        if item.order is not None and result.round_trip_ms is not None
    }


async def handle(engine: ExecutionEngine, book: OrderTable, decision: Decision, source: SourceRef) -> CommandResult:
    """Both phases at once, for executors without outside effects (replay) and for tests."""
    prepared = engine.prepare(book, decision, source)
    if not prepared.needs_executor:
        return CommandResult(prepared.events, prepared.dropped)
    sent = await execute(engine, book, prepared)
    return CommandResult(prepared.events + sent.events, sent.dropped)


async def cancel(engine: ExecutionEngine, book: OrderTable, client_order_id: str) -> tuple[ExecEvent, ...]:
    """Sends the DELETE of an order with a committed cancel intent; the engine records the answer."""
    record = book.get(client_order_id)
    if record is None or is_terminal(record.status) or not record.cancel_requested:
        return ()
    venue: LiveVenue = engine.executor  # type: ignore[assignment]
    return engine.cancel_answered(book, client_order_id, await venue.cancel(client_order_id, record.last.symbol))


async def _change(engine: ExecutionEngine, book: OrderTable, decision: Decision) -> CommandResult:
    target = decision.target_client_order_id
    assert target is not None
    if engine.executor.requires_intent and decision.action is Action.CANCEL:
        return CommandResult(await cancel(engine, book, target))
    record = book.get(target)
    if record is None or is_terminal(record.status):
        return CommandResult(dropped="target_terminal")
    answer: CancelResult | AmendResult
    if decision.action is Action.CANCEL:
        answer = await engine.executor.cancel(target)
    else:
        answer = await engine.executor.amend(target, decision.new_px, decision.new_qty)
    return engine.change_answered(book, decision, answer)


class VenueSync:
    def __init__(self, engine: ExecutionEngine, concurrency: int) -> None:
        self.engine = engine
        self._concurrency = concurrency

    @property
    def venue(self) -> LiveVenue:
        return self.engine.executor  # type: ignore[return-value]

    async def send(self, book: OrderTable, prepared: Sequence[Prepared]) -> list[CommandResult]:
        """Sends committed intents concurrently (bounded); results in input order."""
        if not prepared:
            return []
        if not self.engine.executor.requires_intent:
            # Nothing to wait for (the backtest answers at once): a plain loop is ~2x cheaper.
            return [await execute(self.engine, book, item) for item in prepared]
        limit = asyncio.Semaphore(self._concurrency)

        async def one(item: Prepared) -> CommandResult:
            async with limit:
                return await execute(self.engine, book, item)

        return list(await asyncio.gather(*(one(item) for item in prepared)))

    async def settle(self, book: OrderTable) -> Settled:
        """One round over a partition's open orders (staged in `book`; the caller commits)."""
        result = Settled()
        in_flight: list[OrderRecord] = []
        confirmed: dict[str, list[OrderRecord]] = defaultdict(list)
        for record in book.open_orders():
            if record.in_flight:
                in_flight.append(record)
            else:
                confirmed[record.last.symbol].append(record)
        for symbol, group in sorted(confirmed.items()):
            await self._settle_open(book, symbol, group, result)
        # Last: the resends it decides are stamped with their request's timestamp, so they must
        # reach the caller's commit and send with as much of their recvWindow left as possible.
        await self._settle_in_flight(book, in_flight, result)
        return result

    async def _settle_in_flight(self, book: OrderTable, records: list[OrderRecord], result: Settled) -> None:
        """Queries every expired in-flight order (concurrently), then decides them all at once.

        Deciding as each answer came in stamped the first resends a whole round of queries
        before they could be sent: with many orders (a takeover) or a slow venue they expired
        unsent, again and again, until the order was given up (`not_at_venue_after_3_attempts`)
        without ever having reached the venue.
        """
        due: list[OrderRecord] = []
        for record in records:
            if record.expires_ms is None or not self.venue.clock.past(record.expires_ms):
                result.pending = True  # a copy of the request could still be accepted: wait
            else:
                due.append(record)
        limit = asyncio.Semaphore(self._concurrency)

        async def ask(record: OrderRecord) -> tuple[bool, ExecResult | None]:
            coid = record.last.client_order_id
            async with limit:
                try:
                    return True, await self.venue.query(coid, record.last.symbol)
                except Exception as exc:  # the venue is unreachable or answered nonsense: next round
                    log.warning("order %s: query failed (%s); retried next round", coid, exc)
                    return False, None

        answers = await asyncio.gather(*(ask(record) for record in due))
        for record, (answered, venue) in zip(due, answers, strict=True):
            if not answered:
                result.pending = True
                continue
            resolution = self.engine.resolve_in_flight(book, record.last.client_order_id, venue)
            result.events.extend(resolution.events)
            if resolution.resend is not None:
                result.resends.append(resolution.resend)

    async def _settle_open(self, book: OrderTable, symbol: str, group: list[OrderRecord], result: Settled) -> None:
        try:
            at_venue: dict[str, ExecResult] | None = await self.venue.open_orders(symbol)
        except Exception as exc:
            log.warning("openOrders %s failed (%s); querying its %d orders one by one", symbol, exc, len(group))
            at_venue = None
        for record in group:
            coid = record.last.client_order_id
            try:
                venue = at_venue.get(coid) if at_venue is not None else None
                if venue is None:
                    # Not open any more (or no list): one query for its final state.
                    venue = await self.venue.query(coid, symbol)
                if venue is None:
                    log.error("order %s is %s here but unknown to the venue", coid, record.status)
                    continue
                result.events.extend(self.engine.observe(book, coid, venue))
                now = book.get(coid)
                if now is not None and now.cancel_requested and not is_terminal(now.status):
                    result.events.extend(await cancel(self.engine, book, coid))
                    result.pending = True
            except Exception as exc:
                log.warning("order %s: settling failed (%s); retried next round", coid, exc)
                result.pending = True
