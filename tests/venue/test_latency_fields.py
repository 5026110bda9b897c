"""`latency_ms == ack_ts_ms - sent_ts_ms` on every exec-event that carries both, follow-ups
included (issue 12, item 2): a fill learned later, a cancel intent, its acknowledgement and a
refused cancel each copy the previous event and must not keep its stale latency."""

from __future__ import annotations

from decimal import Decimal

from tests.factories import decision_bytes
from tests.venue.conftest import SandboxFactory
from tests.venue.test_binance_executor import SOURCE, executor, order, seed_market
from worker.codec.json_codec import decode_json
from worker.contract.enums import OrderStatus
from worker.contract.events import ExecEvent
from worker.contract.messages import Decision
from worker.core.engine import ExecutionEngine
from worker.core.order_table import OrderTable
from worker.runtime.venue import VenueSync, handle


def consistent(event: ExecEvent) -> bool:
    if event.sent_ts_ms is None or event.ack_ts_ms is None:
        return event.latency_ms is None
    return event.latency_ms == event.ack_ts_ms - event.sent_ts_ms


def cancel_of(target: str, row: str) -> Decision:
    return decode_json(Decision, decision_bytes(signal_row_id=row, action="CANCEL", target_client_order_id=target))


async def test_follow_up_events_keep_latency_equal_to_ack_minus_sent(sandbox_factory: SandboxFactory) -> None:
    sandbox = await sandbox_factory()
    await seed_market(sandbox)
    venue = executor(sandbox)
    engine = ExecutionEngine(venue)
    book = OrderTable()
    events: list[ExecEvent] = []
    # A resting order, filled later: the fill is learned by reconciliation with a new ack.
    resting = decode_json(Decision, decision_bytes(px="64000.00", signal_row_id="rest"))
    events += (await handle(engine, book, resting, SOURCE)).events
    book.commit()
    await venue.submit(order(signal_row_id="mover", side="SELL", px="63990.00", tif="IOC"))
    events += (await VenueSync(engine, 4).settle(book)).events
    book.commit()
    # A cancel: its intent, then the venue's acknowledgement.
    placed = (
        await handle(engine, book, decode_json(Decision, decision_bytes(px="60000.00", signal_row_id="r2")), SOURCE)
    ).events
    events += placed
    book.commit()
    events += (await handle(engine, book, cancel_of(placed[-1].client_order_id, "c1"), SOURCE)).events
    book.commit()
    # A refused cancel (the order was filled behind our back).
    other = (
        await handle(engine, book, decode_json(Decision, decision_bytes(px="60001.00", signal_row_id="r3")), SOURCE)
    ).events
    events += other
    book.commit()
    venue_order = sandbox.exchange.orders[other[-1].client_order_id]
    venue_order.fill(Decimal("60001"), venue_order.orig_qty)
    events += (await handle(engine, book, cancel_of(other[-1].client_order_id, "c2"), SOURCE)).events
    await venue.close()
    statuses = [e.status for e in events]
    assert {OrderStatus.FILLED, OrderStatus.CANCELED, OrderStatus.PENDING_CANCEL} <= set(statuses)
    assert any((e.reason or "").startswith("cancel_refused:") for e in events)
    assert [e.event_id for e in events if not consistent(e)] == []
