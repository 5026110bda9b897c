"""The live executor against the sandbox exchange over real HTTP, fault by fault."""

from __future__ import annotations

import time
from decimal import Decimal

from tests.factories import decision_bytes
from tests.venue.conftest import RunningSandbox, SandboxFactory
from worker.codec.json_codec import decode_json
from worker.contract.enums import OrderStatus
from worker.contract.messages import Decision
from worker.contract.orders import OrderCtx, SourceRef
from worker.core.engine import ExecutionEngine
from worker.core.order_table import OrderTable
from worker.io.binance.client import BinanceClient, VenueCredentials
from worker.io.binance.executor import BinanceExecutor
from worker.runtime.metrics import WorkerMetrics
from worker.runtime.venue import VenueSync, execute, handle
from worker.sandbox.server import DEFAULT_API_KEY, DEFAULT_API_SECRET

SOURCE = SourceRef(topic="decisions.v1", partition=0, offset=0)


def executor(
    sandbox: RunningSandbox,
    timeout_s: float = 0.5,
    secret: str = DEFAULT_API_SECRET,
    recv_window_ms: int = 5_000,
) -> BinanceExecutor:
    client = BinanceClient(
        sandbox.url,
        VenueCredentials(DEFAULT_API_KEY, secret),
        timeout_s=timeout_s,
        recv_window_ms=recv_window_ms,
        clock_safety_ms=50,  # loopback: the measured error is ~1 ms
    )
    return BinanceExecutor(client, backoff_s=0.01, max_backoff_s=0.05)


def order(**fields: object) -> OrderCtx:
    """A prepared order (rounded, with its id and its request stamped) for a decision with `fields` overridden."""
    engine = ExecutionEngine(BinanceExecutor(BinanceClient("http://unused", VenueCredentials("k", "s"))))
    prepared = engine.prepare(OrderTable(), decode_json(Decision, decision_bytes(**fields)), SOURCE)
    assert prepared.order is not None
    return prepared.order


async def seed_market(sandbox: RunningSandbox, px: str = "64250.00") -> None:
    """A first order sets the sandbox's quote for BTCUSDT (its price model follows the flow)."""
    venue = executor(sandbox)
    await venue.submit(order(signal_row_id="seed", px=px, tif="IOC"))
    await venue.close()


async def test_a_crossing_limit_order_fills_once(sandbox_factory: SandboxFactory) -> None:
    sandbox = await sandbox_factory()
    await seed_market(sandbox)
    venue = executor(sandbox)
    result = await venue.submit(order(px="64300.00"))
    await venue.close()
    assert result.status is OrderStatus.FILLED
    assert result.px_fill is not None and result.px_fill <= Decimal("64300")
    entry = (await sandbox.ledger())[order(px="64300.00").client_order_id]
    assert (entry["submits"], entry["accepts"]) == (1, 1)


async def test_timeout_after_accepting_is_resolved_by_query_not_resend(sandbox_factory: SandboxFactory) -> None:
    sandbox = await sandbox_factory(faults="script=timeout_after,hang=1s")
    venue = executor(sandbox, timeout_s=0.3)
    the_order = order()
    result = await venue.submit(the_order)
    await venue.close()
    assert result.status in (OrderStatus.FILLED, OrderStatus.ACCEPTED)
    entry = (await sandbox.ledger())[the_order.client_order_id]
    assert (entry["submits"], entry["accepts"]) == (1, 1)


async def test_5xx_before_accepting_is_unknown_and_not_resent_by_the_executor(sandbox_factory: SandboxFactory) -> None:
    # "Not found" right after a 5xx proves nothing: a copy may still arrive. The executor never
    # resends; the engine decides after the request's expiry (test_resend_protocol.py).
    sandbox = await sandbox_factory(faults="script=5xx")
    venue = executor(sandbox)
    the_order = order()
    result = await venue.submit(the_order)
    await venue.close()
    assert (result.status, result.reason) == (OrderStatus.UNKNOWN, "unknown_outcome")
    assert the_order.client_order_id not in await sandbox.ledger()
    assert sandbox.exchange.fault_counts == {"5xx": 1}


async def test_5xx_after_accepting_is_not_resent(sandbox_factory: SandboxFactory) -> None:
    sandbox = await sandbox_factory(faults="script=5xx_after")
    venue = executor(sandbox)
    the_order = order()
    result = await venue.submit(the_order)
    await venue.close()
    assert result.status is not OrderStatus.REJECTED
    entry = (await sandbox.ledger())[the_order.client_order_id]
    assert (entry["submits"], entry["accepts"]) == (1, 1)


async def test_a_dropped_connection_is_an_unknown_outcome(sandbox_factory: SandboxFactory) -> None:
    sandbox = await sandbox_factory(faults="script=drop")
    venue = executor(sandbox)
    the_order = order()
    result = await venue.submit(the_order)
    await venue.close()
    assert result.status is OrderStatus.UNKNOWN
    assert the_order.client_order_id not in await sandbox.ledger()


async def test_429_honours_retry_after(sandbox_factory: SandboxFactory) -> None:
    sandbox = await sandbox_factory(faults="script=429,retry_after=1")
    venue = executor(sandbox)
    started = time.monotonic()
    result = await venue.submit(order())
    waited = time.monotonic() - started
    await venue.close()
    assert result.status is not OrderStatus.REJECTED
    assert waited >= 0.9  # the venue said one second; jittered backoff alone is ~10 ms


async def test_418_stops_all_sending(sandbox_factory: SandboxFactory) -> None:
    sandbox = await sandbox_factory(faults="script=418,retry_after=60")
    venue = executor(sandbox)
    first = await venue.submit(order(signal_row_id="a"))
    second = await venue.submit(order(signal_row_id="b"))
    await venue.close()
    assert (first.status, first.reason) == (OrderStatus.REJECTED, "venue_banned")
    assert (second.status, second.reason) == (OrderStatus.REJECTED, "venue_banned")
    assert await sandbox.ledger() == {}  # the second order never left the process
    assert sandbox.exchange.fault_counts == {"418": 1}


async def test_a_request_not_processed_is_tried_at_most_three_times(sandbox_factory: SandboxFactory) -> None:
    sandbox = await sandbox_factory(faults="script=429;429;429,retry_after=0")
    venue = executor(sandbox)
    result = await venue.submit(order())
    await venue.close()
    assert result.status is OrderStatus.REJECTED and result.reason is not None
    assert result.reason.startswith("not_sent:HTTP 429")
    assert sandbox.exchange.fault_counts == {"429": 3}


async def test_venue_rejections_are_final(sandbox_factory: SandboxFactory) -> None:
    sandbox = await sandbox_factory()
    venue = executor(sandbox)
    off_grid = order().model_copy(update={"px": Decimal("64250.123")})
    result = await venue.submit(off_grid)
    await venue.close()
    assert result.status is OrderStatus.REJECTED
    assert result.reason == "venue:-1013:Filter failure: PRICE_FILTER"
    assert (await sandbox.ledger())[off_grid.client_order_id]["submits"] == 1


async def test_a_duplicate_submit_reports_the_existing_order(sandbox_factory: SandboxFactory) -> None:
    sandbox = await sandbox_factory()
    await seed_market(sandbox)
    venue = executor(sandbox)
    resting = order(px="60000.00")  # far below the quote: rests
    first = await venue.submit(resting)
    again = await venue.submit(resting)
    await venue.close()
    assert first.status is OrderStatus.ACCEPTED
    assert again.status is OrderStatus.ACCEPTED
    assert again.exchange_order_id == first.exchange_order_id
    entry = (await sandbox.ledger())[resting.client_order_id]
    assert (entry["submits"], entry["accepts"]) == (2, 1)


async def test_an_unresolvable_outcome_stays_in_flight(sandbox_factory: SandboxFactory) -> None:
    # aiohttp itself repeats an idempotent GET once on a dropped keep-alive connection: 6 drops
    # make sure all three queries fail.
    sandbox = await sandbox_factory(faults="script=timeout_after;drop;drop;drop;drop;drop;drop,hang=1s")
    venue = executor(sandbox, timeout_s=0.3)
    result = await venue.submit(order())
    await venue.close()
    assert (result.status, result.reason) == (OrderStatus.UNKNOWN, "unknown_outcome")


async def test_a_wrong_secret_is_refused(sandbox_factory: SandboxFactory) -> None:
    sandbox = await sandbox_factory()
    venue = executor(sandbox, secret="wrong")
    result = await venue.submit(order())
    await venue.close()
    assert result.status is OrderStatus.REJECTED
    assert result.reason is not None and "-1022" in result.reason
    assert "wrong" not in repr(venue.client._credentials)


async def test_engine_intent_then_fill_then_reconcile(sandbox_factory: SandboxFactory) -> None:
    sandbox = await sandbox_factory()
    await seed_market(sandbox)
    venue = executor(sandbox)
    engine = ExecutionEngine(venue)
    book = OrderTable()
    decision = decode_json(Decision, decision_bytes(px="64000.00", signal_row_id="rest"))
    prepared = engine.prepare(book, decision, SOURCE)
    (intent,) = prepared.events
    assert intent.status is OrderStatus.SUBMITTED
    sent = await execute(engine, book, prepared)
    (accepted,) = sent.events
    assert accepted.status is OrderStatus.ACCEPTED
    book.commit()
    # Someone sells down to our bid: the next order crosses and the resting one fills.
    await venue.submit(order(signal_row_id="mover", side="SELL", px="63990.00", tif="IOC"))
    (filled,) = (await VenueSync(engine, 4).settle(book)).events
    assert filled.status is OrderStatus.FILLED
    assert filled.event_id == f"{accepted.client_order_id}.3"
    assert filled.px_fill == Decimal("64000")
    # The same decision again: known id, no second order.
    assert engine.prepare(book, decision, SOURCE).dropped == "duplicate"
    await venue.close()
    assert (await sandbox.ledger())[accepted.client_order_id]["accepts"] == 1


async def test_cancel_is_an_intent_then_the_venue_acknowledgement(sandbox_factory: SandboxFactory) -> None:
    sandbox = await sandbox_factory()
    await seed_market(sandbox)
    venue = executor(sandbox)
    engine = ExecutionEngine(venue)
    book = OrderTable()
    resting = decode_json(Decision, decision_bytes(px="60000.00", signal_row_id="rest"))
    placed = await handle(engine, book, resting, SOURCE)
    (_intent, accepted) = placed.events
    assert accepted.status is OrderStatus.ACCEPTED
    book.commit()
    cancel = decode_json(
        Decision,
        decision_bytes(signal_row_id="c1", action="CANCEL", target_client_order_id=accepted.client_order_id),
    )
    (pending, canceled) = (await handle(engine, book, cancel, SOURCE)).events
    assert (pending.status, pending.reason) == (OrderStatus.PENDING_CANCEL, "cancel_requested")
    assert canceled.status is OrderStatus.CANCELED and canceled.event_id.endswith(".4")
    assert (await sandbox.ledger())[accepted.client_order_id]["status"] == "CANCELED"
    book.commit()
    again = await handle(engine, book, cancel, SOURCE)
    assert again.events == () and again.dropped == "target_terminal"
    # A cancel the venue refuses is recorded with the venue's reason; reconciliation then learns
    # the order's real end.
    other = decode_json(Decision, decision_bytes(px="60001.00", signal_row_id="rest2"))
    (_, open_order) = (await handle(engine, book, other, SOURCE)).events
    book.commit()
    venue_order = sandbox.exchange.orders[open_order.client_order_id]
    venue_order.fill(Decimal("60001"), venue_order.orig_qty)  # filled behind our back
    refused = await handle(
        engine,
        book,
        decode_json(
            Decision,
            decision_bytes(signal_row_id="c2", action="CANCEL", target_client_order_id=open_order.client_order_id),
        ),
        SOURCE,
    )
    (_intent, refusal) = refused.events
    assert refusal.status is OrderStatus.PENDING_CANCEL
    assert refusal.reason is not None and refusal.reason.startswith("cancel_refused:venue:-2011")
    book.commit()
    (final,) = (await VenueSync(engine, 4).settle(book)).events
    await venue.close()
    assert (final.status, final.qty_filled) == (OrderStatus.FILLED, open_order.qty)


async def test_latency_is_the_answered_round_trip_without_the_backoff(sandbox_factory: SandboxFactory) -> None:
    """Issue 12: `executor_latency_ms` included the retry backoff (here the venue's 1 s Retry-After);
    the event keeps `latency_ms == ack_ts_ms - sent_ts_ms`, the metric gets the round trip."""
    sandbox = await sandbox_factory(faults="script=429,retry_after=1")
    venue = executor(sandbox)
    result = await venue.submit(order())
    await venue.close()
    assert result.latency_ms is not None and result.latency_ms >= 900  # sent at the intent's timestamp
    assert result.round_trip_ms is not None and result.round_trip_ms < 500

    metrics = WorkerMetrics()
    table = OrderTable()
    engine = ExecutionEngine(venue)
    prepared = engine.prepare(table, decode_json(Decision, decision_bytes()), SOURCE)
    assert prepared.order is not None
    events = prepared.events + engine.submitted(table, prepared.order, result)
    metrics.committed(events, {prepared.order.client_order_id: result.round_trip_ms})
    assert metrics.registry.get_sample_value("executor_latency_ms_sum") == result.round_trip_ms
