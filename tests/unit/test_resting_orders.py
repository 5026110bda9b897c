"""Resting orders in a backtest: a GTC limit that does not fill at once waits for the market."""

from __future__ import annotations

import random
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import orjson

from tests.factories import decision_bytes, decision_dict
from worker.contract.enums import OrderStatus
from worker.contract.events import ExecEvent
from worker.contract.messages import MarketSnapshot
from worker.core.backtest import BacktestExecutor
from worker.core.engine import ExecutionEngine
from worker.core.fills import DepthFill, FillModel, QuoteFill
from worker.core.latency import LatencyModel
from worker.core.market import MarketView
from worker.io.outbox import OutboxLine
from worker.policy.rng import Rng
from worker.reporting.summary import build_report
from worker.runtime.replay import list_sink, replay

D = Decimal
T0 = 1_767_225_600_000  # the factory decision's event time
# A fixed 5 ms acknowledgement, so that each test knows which snapshots an order can meet.
FIXED_LATENCY = LatencyModel(base_ms=5, mean_extra_ms=0)


def snapshot(
    at_ms: int,
    bid: str,
    ask: str,
    asks: Sequence[tuple[str, str]] = (),
    symbol: str = "BTCUSDT",
    last_px: str | None = None,
) -> Any:
    return MarketSnapshot.model_validate(
        {
            "symbol": symbol,
            "last_px": last_px,
            "event_time_ms": at_ms,
            "bid": bid,
            "ask": ask,
            "bids": [{"px": bid, "qty": "1"}],
            "asks": [{"px": px, "qty": qty} for px, qty in asks] or [{"px": ask, "qty": "1"}],
        }
    )


async def run(
    values: list[bytes], snapshots: list[Any], fills: FillModel | None = None, max_carry: int = 50
) -> tuple[list[ExecEvent], Any]:
    market = MarketView.from_snapshots(snapshots, max_carry=max_carry, max_carry_ms=5_000)
    executor = BacktestExecutor(Rng(0), latency=FIXED_LATENCY, fills=fills or QuoteFill(), market=market)
    lines: list[OutboxLine] = []
    result = await replay(ExecutionEngine(executor), values, [list_sink(lines)])
    return [ExecEvent.model_validate_json(line.payload) for line in lines], result


async def test_a_resting_buy_fills_at_its_limit_when_the_ask_comes_down_to_it() -> None:
    market = [
        snapshot(T0, "64200.00", "64201.00"),  # would cross, but gone by the acknowledgement (T0+5)
        snapshot(T0 + 4, "64260.00", "64261.00"),  # what the order meets: above its limit, it rests
        snapshot(T0 + 1_000, "64255.00", "64256.00"),  # still above the limit
        snapshot(T0 + 2_000, "64249.00", "64250.00"),  # ask reaches the limit: filled
        snapshot(T0 + 3_000, "64100.00", "64101.00"),
    ]
    events, result = await run([decision_bytes()], market)

    assert [e.status for e in events] == [OrderStatus.ACCEPTED, OrderStatus.FILLED]
    accepted, filled = events
    assert accepted.client_order_id == filled.client_order_id
    assert filled.event_id == f"{accepted.client_order_id}.2"
    assert filled.px_fill == accepted.px_sent == D("64250.12")  # maker: at its own price
    assert filled.qty_filled == filled.qty and filled.ack_ts_ms == T0 + 2_000
    assert filled.slippage_bps is not None and filled.slippage_bps <= 0  # only the passive rounding
    assert result.orders == {"FILLED": 1} and result.open_orders == 0


async def test_a_depth_fill_takes_only_what_the_book_shows_and_completes_later() -> None:
    # 0.01234 BTC resting at 64250.12; the first touching book shows 0.004 at or under the limit.
    market = [
        snapshot(T0, "64260.00", "64261.00"),
        snapshot(T0 + 1_000, "64249.00", "64250.00", asks=[("64250.00", "0.004"), ("64251.00", "5")]),
        snapshot(T0 + 2_000, "64240.00", "64241.00", asks=[("64241.00", "1")]),
    ]
    events, result = await run([decision_bytes(tif="GTC")], market, DepthFill())

    assert [e.status for e in events] == [OrderStatus.ACCEPTED, OrderStatus.PARTIALLY_FILLED, OrderStatus.FILLED]
    assert [e.qty_filled for e in events] == [D(0), D("0.004"), events[0].qty]
    assert [e.ack_ts_ms for e in events[1:]] == [T0 + 1_000, T0 + 2_000]
    assert all(e.px_fill == D("64250.12") for e in events[1:])
    assert result.orders == {"FILLED": 1}


async def test_a_cancel_before_the_market_reaches_the_order_ends_it() -> None:
    order = decision_dict()
    market = [snapshot(T0, "64260.00", "64261.00"), snapshot(T0 + 5_000, "64100.00", "64101.00")]
    first, _ = await run([orjson.dumps(order)], market)
    cancel = decision_dict(
        signal_row_id="row-2",
        event_ts_ms=T0 + 1_000,
        action="CANCEL",
        target_client_order_id=first[0].client_order_id,
    )
    events, result = await run([orjson.dumps(order), orjson.dumps(cancel)], market)

    assert [e.status for e in events] == [OrderStatus.ACCEPTED, OrderStatus.CANCELED]
    assert events[1].reason == "cancel_requested" and events[1].ack_ts_ms == T0 + 1_000 + 5
    assert result.orders == {"CANCELED": 1}  # the later snapshot that crosses finds nothing


async def test_a_cancel_after_the_fill_finds_nothing_to_cancel() -> None:
    market = [snapshot(T0, "64260.00", "64261.00"), snapshot(T0 + 500, "64100.00", "64101.00")]
    first, _ = await run([decision_bytes()], market)
    cancel = decision_bytes(
        signal_row_id="row-2", event_ts_ms=T0 + 1_000, action="CANCEL", target_client_order_id=first[0].client_order_id
    )
    events, result = await run([decision_bytes(), cancel], market)
    # Market time passes the fill at T0+500 before the cancel at T0+1000 is handled.
    assert [e.status for e in events] == [OrderStatus.ACCEPTED, OrderStatus.FILLED]
    assert result.orders == {"FILLED": 1}


async def test_ioc_orders_never_rest_and_gtc_orders_left_open_are_reported() -> None:
    market = [snapshot(T0, "64260.00", "64261.00")]
    events, result = await run([decision_bytes(tif="IOC"), decision_bytes(signal_row_id="row-2")], market)
    assert sorted(e.status for e in events) == [OrderStatus.ACCEPTED, OrderStatus.EXPIRED]
    assert result.open_orders == 1 and result.orders == {"ACCEPTED": 1, "EXPIRED": 1}
    # The report counts an order still resting by its latest state, not as missing.
    report = build_report(events)
    assert report.orders == 2 and report.by_status == result.orders


async def test_resting_fills_are_the_same_whatever_the_interleaving_of_symbols() -> None:
    # Four "partitions" deliver the symbols in different interleavings; per-symbol order is kept,
    # as keyed partitioning keeps it. Fills of resting orders must come out byte-identical.
    rng = random.Random(7)
    symbols = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
    rows: dict[str, list[bytes]] = {s: [] for s in symbols}
    market = []
    for step in range(60):
        for symbol in symbols:
            at = T0 + step * 1_000
            mid = D(100) + D(rng.randint(-50, 50)) / 10
            market.append(snapshot(at, f"{mid - D('0.1'):.2f}", f"{mid + D('0.1'):.2f}", symbol=symbol))
            side = rng.choice(["BUY", "SELL"])
            px = mid + (D(-1) if side == "BUY" else D(1)) * D(rng.randint(0, 30)) / 10
            rows[symbol].append(
                decision_bytes(
                    symbol=symbol,
                    signal_row_id=f"{symbol}-{step}",
                    event_ts_ms=at + rng.randint(0, 999),
                    ts_ms=at + 1_000,
                    side=side,
                    qty="1",
                    px=f"{px:.2f}",
                    tif=rng.choice(["GTC", "GTC", "IOC"]),
                )
            )
    in_order = [v for s in symbols for v in rows[s]]
    interleaved = [v for group in zip(*rows.values(), strict=True) for v in group]
    reversed_symbols = [v for s in reversed(symbols) for v in rows[s]]

    outcomes = [await run(values, market) for values in (in_order, interleaved, reversed_symbols)]
    digests = {result.digest for _, result in outcomes}
    assert len(digests) == 1
    events = outcomes[0][0]
    statuses = {e.status for e in events}
    assert {OrderStatus.ACCEPTED, OrderStatus.FILLED, OrderStatus.EXPIRED} <= statuses
    # Some orders filled after resting: a FILLED event that is not the order's first.
    assert any(e.status is OrderStatus.FILLED and not e.event_id.endswith(".1") for e in events)


async def test_a_sell_trade_through_the_limit_fills_a_resting_buy_and_the_tick_rule_caps_apply() -> None:
    # The ask never comes down to the 64250.12 limit, but trades print there: a downtick to
    # 64250.00 (seller-initiated), then the same price again (direction carried, within caps).
    market = [
        snapshot(T0, "64260.00", "64261.00", last_px="64260.00"),
        snapshot(T0 + 1_000, "64260.00", "64261.00", last_px="64262.00"),  # uptick: a buyer, no fill
        snapshot(T0 + 2_000, "64255.00", "64256.00", last_px="64262.00"),  # unchanged: still a buyer
        snapshot(T0 + 3_000, "64255.00", "64256.00", last_px="64250.00"),  # downtick through the limit
    ]
    events, _ = await run([decision_bytes()], market)
    assert [e.status for e in events] == [OrderStatus.ACCEPTED, OrderStatus.FILLED]
    assert events[1].ack_ts_ms == T0 + 3_000 and events[1].px_fill == D("64250.12")

    # A sell at the limit long after the last price change is of unknown direction: no fill.
    flat = [
        snapshot(T0, "64260.00", "64261.00", last_px="64251.00"),
        snapshot(T0 + 1_000, "64260.00", "64261.00", last_px="64250.00"),  # downtick, before the order rests
        *[snapshot(T0 + 1_000 + k, "64260.00", "64261.00", last_px="64250.00") for k in range(1, 4)],
        snapshot(T0 + 2_000, "64260.00", "64261.00", last_px="64250.00"),
    ]
    order = decision_bytes(event_ts_ms=T0 + 1_500)
    carried, _ = await run([order], flat, max_carry=50)
    capped, _ = await run([order], flat, max_carry=2)
    assert [e.status for e in carried] == [OrderStatus.ACCEPTED, OrderStatus.FILLED]
    assert [e.status for e in capped] == [OrderStatus.ACCEPTED]  # the 4th unchanged print is past the cap


async def test_resting_orders_are_matched_only_when_their_symbol_has_new_market_data() -> None:
    # 40 BTC orders rest; then 200 ETH decisions advance market time through ETH-only snapshots.
    # Matching must look at BTC's book only when BTC has new snapshots (the last one), not once
    # per decision: a long backtest with many resting orders costs per snapshot.
    calls: list[str] = []

    class CountingView(MarketView):
        def quotes_between(self, symbol: str, after_ms: int, until_ms: int | None) -> list[Any]:
            calls.append(symbol)
            return super().quotes_between(symbol, after_ms, until_ms)

    btc = [decision_bytes(signal_row_id=f"btc-{i}", px="64000.00") for i in range(40)]
    eth = [
        decision_bytes(
            symbol="ETHUSDT", signal_row_id=f"eth-{i}", event_ts_ms=T0 + 10 * (i + 1), px="3000.00", tif="IOC"
        )
        for i in range(200)
    ]
    market = [snapshot(T0, "64260.00", "64261.00")]
    market += [snapshot(T0 + 10 * (i + 1), "3100.00", "3101.00", symbol="ETHUSDT") for i in range(200)]
    market.append(snapshot(T0 + 5_000, "63900.00", "63901.00"))  # BTC comes down through every limit
    view = CountingView.from_snapshots(market)
    executor = BacktestExecutor(Rng(0), latency=FIXED_LATENCY, fills=QuoteFill(), market=view)
    result = await replay(ExecutionEngine(executor), btc + eth)

    assert result.orders == {"FILLED": 40, "EXPIRED": 200}
    assert calls.count("BTCUSDT") == 40  # once per resting order, at the end of the data


# -- maker fees and queue position (issue 14) -------------------------------------------------


def book(
    at_ms: int, bids: Sequence[tuple[str, str]], ask: str = "64251.00", last_px: str | None = None
) -> MarketSnapshot:
    return MarketSnapshot.model_validate(
        {
            "symbol": "BTCUSDT",
            "event_time_ms": at_ms,
            "bid": bids[0][0],
            "ask": ask,
            "bids": [{"px": px, "qty": qty} for px, qty in bids],
            "asks": [{"px": ask, "qty": "1"}],
            "last_px": last_px,
        }
    )


P = "64250.12"  # the factory decision's BUY limit after passive rounding


async def run_with(snapshots: list[MarketSnapshot], **options: Any) -> list[ExecEvent]:
    market = MarketView.from_snapshots(snapshots)
    executor = BacktestExecutor(Rng(0), latency=FIXED_LATENCY, fills=QuoteFill(), market=market, **options)
    lines: list[OutboxLine] = []
    await replay(ExecutionEngine(executor), [decision_bytes()], [list_sink(lines)])
    return [ExecEvent.model_validate_json(line.payload) for line in lines]


# The order joins a bid level of 0.05 at its price; 0.02 of it goes; a seller prints at the limit
# (fills only if nothing is ahead); the level empties; a seller prints at the limit again.
QUEUE_MARKET = [
    book(T0 + 4, [(P, "0.05"), ("64250.11", "1")]),
    book(T0 + 1_000, [(P, "0.03"), ("64250.11", "1")], last_px="64250.50"),
    book(T0 + 2_000, [(P, "0.03"), ("64250.11", "1")], last_px=P),
    book(T0 + 3_000, [("64250.11", "1")], last_px="64250.30"),
    book(T0 + 4_000, [("64250.11", "1")], last_px=P),
]


async def test_without_the_queue_model_a_print_at_the_limit_fills_at_once() -> None:
    events = await run_with(QUEUE_MARKET)
    assert [e.status for e in events] == [OrderStatus.ACCEPTED, OrderStatus.FILLED]
    assert events[-1].ack_ts_ms == T0 + 2_000 and events[-1].px_fill == D(P)


async def test_with_the_queue_model_the_volume_ahead_trades_first() -> None:
    events = await run_with(QUEUE_MARKET, queue_position=True)
    assert [e.status for e in events] == [OrderStatus.ACCEPTED, OrderStatus.FILLED]
    # Not at 2,000 (0.03 still ahead), but once the level has gone and a seller prints again.
    assert events[-1].ack_ts_ms == T0 + 4_000 and events[-1].px_fill == D(P)


async def test_with_the_queue_model_a_touch_at_the_limit_waits_but_a_touch_through_it_fills() -> None:
    market = [
        book(T0 + 4, [(P, "0.05")]),
        book(T0 + 1_000, [(P, "0.05")], ask=P),  # the ask at our price: 0.05 ahead of us, no fill
        book(T0 + 2_000, [(P, "0.05")], ask="64250.10"),  # through our price: the level traded
    ]
    assert (await run_with(market))[-1].ack_ts_ms == T0 + 1_000
    assert (await run_with(market, queue_position=True))[-1].ack_ts_ms == T0 + 2_000


async def test_an_order_that_improves_on_the_best_bid_has_nothing_ahead() -> None:
    market = [
        book(T0 + 4, [("64250.00", "3")]),
        book(T0 + 1_000, [("64250.00", "3")], ask=P),
    ]
    events = await run_with(market, queue_position=True)
    assert events[-1].status is OrderStatus.FILLED and events[-1].ack_ts_ms == T0 + 1_000


async def test_resting_fills_pay_the_maker_fee_in_their_price_and_a_rebate_improves_it() -> None:
    fee = await run_with(QUEUE_MARKET, maker_fee_bps=D(2))
    assert fee[-1].px_fill == D("64262.970024")  # 64250.12 x 1.0002, six decimals (tick + 4)
    rebate = await run_with(QUEUE_MARKET, maker_fee_bps=D("-1"))
    assert rebate[-1].px_fill == D("64243.694988")  # 64250.12 x 0.9999
    assert fee[-1].slippage_bps is not None and fee[-1].slippage_bps > 0
    none = await run_with(QUEUE_MARKET)
    assert none[-1].px_fill == D(P)  # default: exactly the limit, as sent


async def test_with_depth_the_sellers_volume_at_the_limit_fills_the_queue_ahead_first() -> None:
    def crossing(at_ms: int, size: str) -> MarketSnapshot:
        return MarketSnapshot.model_validate(
            {
                "symbol": "BTCUSDT",
                "event_time_ms": at_ms,
                "bid": P,
                "ask": P,
                "bids": [{"px": P, "qty": "0.05"}],
                "asks": [{"px": P, "qty": size}],
            }
        )

    market = [book(T0 + 4, [(P, "0.05")]), crossing(T0 + 1_000, "0.03"), crossing(T0 + 2_000, "0.03")]
    executor = BacktestExecutor(
        Rng(0), latency=FIXED_LATENCY, fills=DepthFill(), market=MarketView.from_snapshots(market), queue_position=True
    )
    lines: list[OutboxLine] = []
    await replay(ExecutionEngine(executor), [decision_bytes()], [list_sink(lines)])
    events = [ExecEvent.model_validate_json(line.payload) for line in lines]
    # 0.05 ahead: the first 0.03 goes to it; of the next 0.03, 0.02 to it and 0.01 to us.
    assert [e.status for e in events] == [OrderStatus.ACCEPTED, OrderStatus.PARTIALLY_FILLED]
    assert events[-1].qty_filled == D("0.01") and events[-1].ack_ts_ms == T0 + 2_000
