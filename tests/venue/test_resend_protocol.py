"""The resend protocol against the sandbox over real HTTP: late copies, expiry, bounded resends.

A late copy is made the way the network makes one: the exact signed request the worker sent is
delivered to the venue again, later, by the test (after the first delivery timed out unprocessed).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from decimal import Decimal

import pytest
from aiohttp import ClientSession, web

from tests.factories import decision_bytes
from tests.venue.conftest import SandboxFactory
from tests.venue.test_binance_executor import SOURCE, executor, seed_market
from worker.codec.json_codec import decode_json
from worker.contract.enums import OrderStatus
from worker.contract.events import ExecEvent
from worker.contract.messages import Decision
from worker.core.engine import ExecutionEngine, Prepared
from worker.core.order_table import OrderTable
from worker.io.binance.client import BinanceClient, VenueBanned, VenueCredentials
from worker.io.binance.executor import BinanceExecutor
from worker.runtime.venue import VenueSync, execute
from worker.sandbox.limits import Limits

WINDOW_MS = 1_500  # short recvWindow: each test waits for one expiry at most


class Recorder:
    """Keeps every signed order request the client sends, to deliver a copy of it later."""

    def __init__(self, venue: BinanceExecutor) -> None:
        self.urls: list[str] = []
        send = venue.client._send

        async def recording(method: str, path: str, query: str, weight: int) -> dict[str, object]:
            if method == "POST":
                self.urls.append(f"{venue.client.base_url}{path}?{query}")
            return await send(method, path, query, weight)

        venue.client._send = recording  # type: ignore[method-assign]


async def deliver_copy(url: str) -> tuple[int, dict[str, object]]:
    async with (
        ClientSession(headers={"X-MBX-APIKEY": "sandbox-key"}) as session,
        session.post(url) as response,
    ):
        return response.status, await response.json()


async def settle_until(sync: VenueSync, book: OrderTable, done: object, timeout_s: float = 10.0) -> list[ExecEvent]:
    """Reconciliation rounds (as the worker runs them) until `done(book)`; every event, in order."""
    events: list[ExecEvent] = []
    deadline = time.monotonic() + timeout_s
    while not done(book):  # type: ignore[operator]
        assert time.monotonic() < deadline, f"not settled; events so far: {[e.status for e in events]}"
        settled = await sync.settle(book)
        events += settled.events
        book.commit()
        for order in settled.resends:
            events += (await execute(sync.engine, book, Prepared(order=order))).events
            book.commit()
        await asyncio.sleep(0.1)  # the venue's clock has to pass the expiry: nothing to await
    return events


def terminal(coid: str) -> object:
    def check(book: OrderTable) -> bool:
        record = book.get(coid)
        return record is not None and record.status in (
            OrderStatus.FILLED,
            OrderStatus.EXPIRED,
            OrderStatus.REJECTED,
            OrderStatus.CANCELED,
        )

    return check


async def first_send(engine: ExecutionEngine, book: OrderTable, **fields: object) -> tuple[ExecEvent, ...]:
    decision = decode_json(Decision, decision_bytes(**fields))
    prepared = engine.prepare(book, decision, SOURCE)
    book.commit()  # the intent is committed before the send
    events = prepared.events + (await execute(engine, book, prepared)).events
    book.commit()
    return events


async def test_a_late_copy_after_not_found_is_the_only_order(sandbox_factory: SandboxFactory) -> None:
    # The first delivery hangs unprocessed past the client's timeout; the query right after says
    # -2013; then the same request arrives late and is accepted. The old executor resent at once
    # on that -2013, and the IOC fill freed the id: two accepted orders (issue 10).
    sandbox = await sandbox_factory(faults="script=none;timeout_before,hang=0.5s")
    await seed_market(sandbox)
    venue = executor(sandbox, timeout_s=0.2, recv_window_ms=WINDOW_MS)
    recorder = Recorder(venue)
    engine = ExecutionEngine(venue)
    book = OrderTable()
    sent = await first_send(engine, book, signal_row_id="late", px="64300.00", tif="IOC")
    assert [e.status for e in sent] == [OrderStatus.SUBMITTED, OrderStatus.UNKNOWN]
    coid = sent[0].client_order_id
    status, _ = await deliver_copy(recorder.urls[0])  # the late copy, inside its recvWindow
    assert status == 200
    events = await settle_until(VenueSync(engine, 4), book, terminal(coid))
    await venue.close()
    assert [e.status for e in events] == [OrderStatus.FILLED]
    entry = (await sandbox.ledger())[coid]
    assert entry["accepts"] == 1
    # No resend: one intent only, and the fill is the late copy's.
    record = book.get(coid)
    assert record is not None and record.attempt == 1


async def test_a_copy_after_expiry_is_refused_and_the_resend_is_the_only_order(
    sandbox_factory: SandboxFactory,
) -> None:
    sandbox = await sandbox_factory(faults="script=none;timeout_before,hang=0.5s")
    await seed_market(sandbox)
    venue = executor(sandbox, timeout_s=0.2, recv_window_ms=WINDOW_MS)
    recorder = Recorder(venue)
    engine = ExecutionEngine(venue)
    book = OrderTable()
    sent = await first_send(engine, book, signal_row_id="expired", px="64300.00", tif="IOC")
    coid = sent[0].client_order_id
    events = await settle_until(VenueSync(engine, 4), book, terminal(coid))
    # After expiry: not at the venue -> a new intent (attempt 2, new timestamp) -> filled.
    assert [(e.status, e.attempt) for e in events] == [(OrderStatus.SUBMITTED, 2), (OrderStatus.FILLED, 2)]
    assert events[0].reason == "resend" and events[0].sent_ts_ms is not None
    assert sent[0].sent_ts_ms is not None and events[0].sent_ts_ms > sent[0].sent_ts_ms + WINDOW_MS
    status, body = await deliver_copy(recorder.urls[0])  # the first request, far too late
    await venue.close()
    assert (status, body["code"]) == (400, -1021)
    assert (await sandbox.ledger())[coid]["accepts"] == 1


async def test_at_most_three_intents_then_rejected(sandbox_factory: SandboxFactory) -> None:
    # A venue that never processes the order (every POST hangs unprocessed): three intents, each
    # resolved only after its own expiry, then REJECTED with the count.
    never = ";".join(["timeout_before;none;none"] * 3)  # POST hangs; the two queries answer
    sandbox = await sandbox_factory(faults=f"script={never},hang=0.3s")
    venue = executor(sandbox, timeout_s=0.1, recv_window_ms=WINDOW_MS)
    engine = ExecutionEngine(venue)
    book = OrderTable()
    sent = await first_send(engine, book, signal_row_id="never", px="64300.00", tif="IOC")
    coid = sent[0].client_order_id
    events = await settle_until(VenueSync(engine, 4), book, terminal(coid), timeout_s=20)
    await venue.close()
    assert [e.status for e in events] == [
        OrderStatus.SUBMITTED,
        OrderStatus.UNKNOWN,
        OrderStatus.SUBMITTED,
        OrderStatus.UNKNOWN,
        OrderStatus.REJECTED,
    ]
    assert events[-1].reason == "not_at_venue_after_3_attempts"
    assert coid not in await sandbox.ledger()


async def test_an_expired_intent_is_never_signed(sandbox_factory: SandboxFactory) -> None:
    sandbox = await sandbox_factory()
    venue = executor(sandbox, recv_window_ms=WINDOW_MS)
    engine = ExecutionEngine(venue)
    prepared = engine.prepare(OrderTable(), decode_json(Decision, decision_bytes(signal_row_id="old")), SOURCE)
    assert prepared.order is not None
    # The worker paused between the commit of the intent and the send.
    stale = prepared.order.model_copy(update={"sent_ts_ms": venue.clock.now_ms() - WINDOW_MS})
    result = await venue.submit(stale)
    await venue.close()
    assert (result.status, result.reason) == (OrderStatus.UNKNOWN, "expired_before_send")
    assert await sandbox.ledger() == {}


@pytest.fixture
async def html_502_venue() -> AsyncIterator[str]:
    """A venue behind a proxy that answers an HTML error page (and knows no orders)."""

    async def page(request: web.Request) -> web.Response:
        return web.Response(status=502, text="<html><body>502 Bad Gateway</body></html>", content_type="text/html")

    async def empty(request: web.Request) -> web.Response:
        return web.Response(status=200, body=b"")

    async def time_(request: web.Request) -> web.Response:
        return web.json_response({"serverTime": int(time.time() * 1000)})

    app = web.Application()
    app.router.add_post("/api/v3/order", page)
    app.router.add_get("/api/v3/order", empty)
    app.router.add_get("/api/v3/time", time_)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    await runner.cleanup()


async def test_an_html_502_is_an_unknown_outcome_not_a_crash(html_502_venue: str) -> None:
    client = BinanceClient(html_502_venue, VenueCredentials("k", "s"), timeout_s=1.0, clock_safety_ms=50)
    venue = BinanceExecutor(client, backoff_s=0.01, max_backoff_s=0.02)
    engine = ExecutionEngine(venue)
    book = OrderTable()
    events = await first_send(engine, book, signal_row_id="proxy")
    await venue.close()
    assert [e.status for e in events] == [OrderStatus.SUBMITTED, OrderStatus.UNKNOWN]


async def test_after_a_418_no_request_of_any_kind_is_sent(sandbox_factory: SandboxFactory) -> None:
    sandbox = await sandbox_factory(faults="script=418,retry_after=60")
    venue = executor(sandbox)
    engine = ExecutionEngine(venue)
    events = await first_send(engine, OrderTable(), signal_row_id="banned")
    assert events[-1].reason == "venue_banned"
    with pytest.raises(VenueBanned):
        await venue.query(events[-1].client_order_id, "BTCUSDT")
    cancel = await venue.cancel(events[-1].client_order_id, "BTCUSDT")
    await venue.close()
    assert cancel.status is OrderStatus.PENDING_CANCEL  # not sent; retried once the ban ends
    assert sandbox.exchange.fault_counts == {"418": 1} and await sandbox.ledger() == {}


async def test_200_resting_orders_settle_within_binance_weight_limit(sandbox_factory: SandboxFactory) -> None:
    sandbox = await sandbox_factory(limits=Limits.unlimited())  # placing 200 unfilled orders at once
    await seed_market(sandbox, px="64250.00")
    venue = executor(sandbox)
    engine = ExecutionEngine(venue)
    book = OrderTable()
    for index in range(200):
        px = Decimal("60000.00") - index
        await first_send(engine, book, signal_row_id=f"rest{index}", px=str(px))
    assert len(book.open_orders()) > 100  # the sandbox's quote follows the flow: some filled at once
    # From now on, Binance's published limits (6,000 request weight per minute), counters at zero.
    sandbox.exchange.limits = Limits.binance()
    sync = VenueSync(engine, 4)
    await sync.settle(book)  # the first round learns what filled while the orders were placed
    book.commit()
    first_round = sandbox.exchange.rates.weight_spent
    for _ in range(30):  # then 30 rounds: half a minute of reconciliation at the default interval
        await sync.settle(book)
        book.commit()
    used = sandbox.exchange.rates.weight_spent - first_round
    await venue.close()
    # Steady state: one openOrders (weight 6) per symbol per round. One query (weight 4) per open
    # order per round, as before, would be ~24,000: four times Binance's limit per minute.
    assert used <= 30 * 6 + 4 * 10, used  # (+ a query for the odd order that fills meanwhile)
    assert first_round <= 1_000, first_round  # about one query per order that closed meanwhile
    assert sandbox.exchange.rates.refusals == {}  # no 429, no 418
    for coid, venue_order in sandbox.exchange.orders.items():
        record = book.get(coid)
        if record is not None:
            assert record.status.value == {"NEW": "ACCEPTED"}.get(venue_order.status, venue_order.status)
