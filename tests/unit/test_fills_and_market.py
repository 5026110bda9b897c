from decimal import Decimal

import pytest

from tests.factories import decision_bytes
from worker.codec.json_codec import decode_json
from worker.contract.enums import OrderStatus
from worker.contract.events import ExecEvent
from worker.contract.messages import Decision, MarketSnapshot
from worker.contract.orders import OrderCtx, SourceRef
from worker.core.backtest import BacktestExecutor
from worker.core.engine import ExecutionEngine
from worker.core.fills import DepthFill, Quote, QuoteFill, fill_model
from worker.core.market import MarketView, tick_rule
from worker.core.order_table import OrderTable
from worker.io.outbox import OutboxLine
from worker.policy.rng import Rng

D = Decimal
QUOTE = Quote(
    bid=D("64249.00"),
    ask=D("64250.00"),
    bids=((D("64249.00"), D("0.005")), (D("64248.00"), D("1"))),
    asks=((D("64250.00"), D("0.004")), (D("64251.00"), D("0.004")), (D("64260.00"), D("1"))),
)


def order(**fields: object) -> OrderCtx:
    prepared = ExecutionEngine(BacktestExecutor(Rng(0))).prepare(
        OrderTable(), decode_json(Decision, decision_bytes(**fields)), SourceRef(topic="t", partition=0, offset=0)
    )
    assert prepared.order is not None
    return prepared.order


def test_quote_model_fills_at_the_touch_only_when_the_limit_reaches_it() -> None:
    crossing = QuoteFill().fill(order(px="64255.00"), QUOTE)
    assert (crossing.status, crossing.px_fill) == (OrderStatus.FILLED, D("64250.00"))
    short = QuoteFill().fill(order(px="64240.00", tif="IOC"), QUOTE)
    assert (short.status, short.reason) == (OrderStatus.EXPIRED, "limit_not_reached")
    resting = QuoteFill().fill(order(px="64240.00", tif="GTC"), QUOTE)
    assert resting.status is OrderStatus.ACCEPTED
    assert QuoteFill().fill(order(), None).reason == "no_market_data"


def test_depth_model_walks_levels_and_fills_partially() -> None:
    # 0.01 BTC against 0.004 @ 64250 + 0.004 @ 64251, then a level beyond the limit.
    partial = DepthFill().fill(order(qty="0.01", px="64255.00", tif="IOC"), QUOTE)
    assert partial.status is OrderStatus.EXPIRED and partial.reason == "book_exhausted"
    assert partial.qty_filled == D("0.008")
    assert partial.px_fill == (D("0.004") * D("64250") + D("0.004") * D("64251")) / D("0.008")
    full = DepthFill().fill(order(qty="0.01", px="64300.00"), QUOTE)
    assert full.status is OrderStatus.FILLED and full.qty_filled == D("0.01")
    assert full.px_fill is not None and D("64250") < full.px_fill < D("64260")


def test_depth_falls_back_to_square_root_impact_where_the_snapshot_has_no_book() -> None:
    top_only = Quote(bid=D("64249.00"), ask=D("64250.00"))
    buy = order(qty="0.5", px="64400.00", tif="IOC")
    assert DepthFill().fill(buy, top_only).reason == "no_book"
    fallback = fill_model("depth:10:1000").fill(buy, top_only)
    assert fallback == fill_model("sqrt_impact:10:1000").fill(buy, top_only)
    # 10 bps x sqrt(0.5 / 1000) = 0.2236 bps above the ask, rounded up to the tick.
    assert fallback.status is OrderStatus.FILLED and fallback.px_fill == D("64251.44")
    # With levels, the book decides as before.
    assert fill_model("depth:10:1000").fill(buy, QUOTE) == DepthFill().fill(buy, QUOTE)


def test_cost_models_are_adverse_on_the_tick_grid_and_never_through_the_limit() -> None:
    market_buy = order(order_type="MARKET", px=None, tif="IOC").model_copy(update={"px_intent": D("64250.00")})
    fixed = fill_model("fixed_bps:10").fill(market_buy, None)
    assert fixed.px_fill == D("64314.25")  # 64250 * 1.001 = 64314.25, on the 0.01 grid
    spread = fill_model("spread_fees").fill(market_buy, QUOTE)  # costs_bps 4 -> 2 bps on the ask
    assert spread.px_fill == D("64262.85")  # 64250 * 1.0002 = 64262.85
    impact = fill_model("sqrt_impact:100:1").fill(market_buy, QUOTE)  # 100 bps * sqrt(0.01234 / 1)
    assert impact.px_fill is not None and impact.px_fill > D("64250")
    capped = fill_model("fixed_bps:10").fill(order(px="64260.00", tif="IOC"), QUOTE)
    assert capped.status is OrderStatus.EXPIRED  # 64250 + 10 bps is beyond the 64260 limit


def test_bad_model_specs_say_what_is_allowed() -> None:
    with pytest.raises(ValueError, match="fixed_bps:BPS"):
        fill_model("fixed_bps")
    with pytest.raises(ValueError, match="use immediate"):
        fill_model("teleport")


def test_market_view_answers_as_of_event_time_in_market_time_order() -> None:
    snaps = [
        MarketSnapshot(symbol="BTCUSDT", event_time_ms=2_000_000_000_000 + t, bid=D(p), ask=D(p) + 1)
        for t, p in ((2_000, "102"), (0, "100"), (1_000, "101"))  # arrives out of order
    ]
    view = MarketView.from_snapshots(snaps)
    base = 2_000_000_000_000
    assert view.quote_at("BTCUSDT", base - 1) is None
    assert view.quote_at("BTCUSDT", base + 1_500).bid == D("101")  # type: ignore[union-attr]
    assert view.quote_at("BTCUSDT", base + 9_999).bid == D("102")  # type: ignore[union-attr]
    assert view.quote_at("ETHUSDT", base) is None


def test_tick_rule_carries_direction_within_caps() -> None:
    trades = [(0, D(100)), (10, D(101)), (20, D(101)), (30, D(101)), (40, D(100)), (6_000, D(100))]
    assert tick_rule(trades, max_carry=5, max_carry_ms=5_000) == [0, 1, 1, 1, -1, 0]
    assert tick_rule(trades, max_carry=1, max_carry_ms=5_000) == [0, 1, 1, 0, -1, 0]


async def test_replay_with_market_data_is_deterministic_and_uses_the_quotes(tmp_path: object) -> None:
    import orjson

    from examples.gen_decisions import decisions, market_snapshots
    from worker.runtime.replay import list_sink, replay

    rows = list(decisions(800, seed=81))
    view = MarketView.from_snapshots(MarketSnapshot.model_validate(s) for s in market_snapshots(rows, 81))
    values = [orjson.dumps(r) for r in rows]

    def engine() -> ExecutionEngine:
        return ExecutionEngine(BacktestExecutor(Rng(2), fills=QuoteFill(), market=view))

    lines: list[OutboxLine] = []
    first, second = await replay(engine(), values, [list_sink(lines)]), await replay(engine(), values)
    assert first.digest == second.digest
    events = [ExecEvent.model_validate_json(line.payload) for line in lines]
    statuses = {e.status for e in events}
    assert {OrderStatus.FILLED, OrderStatus.EXPIRED} <= statuses  # some limits reach the quote, some do not
    for event in events:
        if event.status is OrderStatus.FILLED and event.px_sent is not None:
            assert event.px_fill is not None
            assert event.px_fill <= event.px_sent if event.side.value == "BUY" else event.px_fill >= event.px_sent
