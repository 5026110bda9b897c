"""`execworker diff --fit`: on synthetic live fills made by the backtest's own models with known
parameters (a cost per regime, a latency), the fit recovers those parameters.

Tolerances (stated in docs/diff.md): a fixed cost within 0.2 bps per regime with 1 bps of
per-order noise and ~400 fills a regime; a square-root impact K within 5 %; the latency base
exactly and its mean within 10 %."""

from __future__ import annotations

import random
from decimal import Decimal
from typing import Any

import pytest

from tests.factories import decision_bytes
from worker.cli.common import UsageError
from worker.codec.json_codec import decode_json
from worker.contract.enums import OrderStatus, OrderType, Side, TimeInForce
from worker.contract.events import ExecEvent
from worker.contract.messages import Decision, MarketSnapshot
from worker.contract.orders import OrderCtx
from worker.core.fills import AdverseBps, ByRegime, Quote, fill_model
from worker.core.latency import LatencyModel
from worker.core.market import MarketView
from worker.policy.rng import Rng
from worker.reporting.diff import outcomes
from worker.reporting.fit import ALL, fit, fit_latency, fit_lines

T0 = 1_767_225_600_000
REGIMES = {"trend": Decimal("3.5"), "range": Decimal("1.2"), "volatile": Decimal("6.0")}
LATENCY = LatencyModel(7, 25.0)
TICK = Decimal("0.01")


def order_ctx(index: int, regime: str, side: Side, qty: Decimal, order_type: OrderType, px: Decimal | None) -> OrderCtx:
    return OrderCtx(
        client_order_id=f"ew{index:08d}",
        signal_row_id=f"row-{index}",
        symbol="BTCUSDT",
        side=side,
        order_type=order_type,
        tif=TimeInForce.IOC,
        qty=qty,
        px=px,
        px_intent=px,
        qty_intent=qty,
        rounding_applied=False,
        rounding_diff=Decimal(0),
        tick_size=TICK,
        step_size=Decimal("0.001"),
        min_notional=Decimal(0),
        costs_bps=Decimal(4),
        ts_ms=T0 + index * 10_000,
        event_ts_ms=T0 + index * 10_000,
        regime=regime,
        scenario="base",
        mode="default",
        source={"topic": "decisions", "partition": 0, "offset": index},
    )


def live_events(order: OrderCtx, status: OrderStatus, px_fill: Decimal | None, latency: int) -> list[ExecEvent]:
    """What a live worker writes: the intent, then the venue's answer."""
    common: dict[str, Any] = {
        "client_order_id": order.client_order_id,
        "signal_row_id": order.signal_row_id,
        "symbol": order.symbol,
        "side": order.side,
        "qty": order.qty,
        "px_intent": order.px_intent,
        "px_sent": order.px,
        "rounding_applied": False,
        "rounding_diff": Decimal(0),
        "slippage_bps": None,
        "exchange_order_id": "1",
        "reason": None,
        "sent_ts_ms": order.event_ts_ms,
        "event_ts_ms": order.event_ts_ms,
        "executor": "sandbox",
        "mode": "default",
        "scenario": "base",
        "source": order.source,
    }
    intent = ExecEvent(
        event_id=f"{order.client_order_id}.1",
        status=OrderStatus.SUBMITTED,
        px_fill=None,
        qty_filled=Decimal(0),
        ack_ts_ms=None,
        latency_ms=None,
        **common,
    )
    answer = ExecEvent(
        event_id=f"{order.client_order_id}.2",
        status=status,
        px_fill=px_fill,
        qty_filled=order.qty if px_fill is not None else Decimal(0),
        ack_ts_ms=order.event_ts_ms + latency,
        latency_ms=latency,
        **common,
    )
    return [intent, answer]


def synthetic(
    model: str = "fixed_bps", k_bps: Decimal = Decimal(12), adv: Decimal = Decimal(1000)
) -> tuple[list[ExecEvent], dict[str, Decision], list[MarketSnapshot]]:
    """~400 orders per regime, each filled by the backtest's own cost model with its regime's
    parameter plus 1 bps of Gaussian noise, after a latency drawn by the latency model; market
    snapshots 10 s apart (one per order), so the touch an order meets is its own snapshot's."""
    draw = random.Random(7)
    rng = Rng(11)
    events: list[ExecEvent] = []
    decisions: dict[str, Decision] = {}
    snapshots: list[MarketSnapshot] = []
    for index in range(1200):
        regime = sorted(REGIMES)[index % 3]
        side = Side.BUY if draw.random() < 0.5 else Side.SELL
        qty = Decimal(draw.randint(1, 50))
        mid = Decimal(60_000 + draw.randint(-2_000, 2_000)) + Decimal(draw.randint(0, 99)) / 100
        quote = Quote(bid=mid - TICK, ask=mid + TICK)
        snapshots.append(
            MarketSnapshot(symbol="BTCUSDT", event_time_ms=T0 + index * 10_000, bid=quote.bid, ask=quote.ask)
        )
        # Half MARKET, half marketable LIMIT orders (far enough through the touch to fill).
        limit = (
            None if index % 2 else (quote.ask * Decimal("1.01") if side is Side.BUY else quote.bid * Decimal("0.99"))
        )
        order = order_ctx(index, regime, side, qty, OrderType.LIMIT if limit else OrderType.MARKET, limit)
        noise = Decimal(str(round(draw.gauss(0, 1), 4)))
        if model == "fixed_bps":
            cost = AdverseBps("fixed_bps", bps=REGIMES[regime] + noise)
        else:
            cost = AdverseBps("fixed_bps", bps=k_bps * (qty / adv).sqrt() + noise)
        fill = cost.fill(order, quote)
        assert fill.status is OrderStatus.FILLED
        events.extend(live_events(order, fill.status, fill.px_fill, LATENCY.sample_ms(rng, order.client_order_id)))
        decisions[order.signal_row_id] = decode_json(
            Decision, decision_bytes(signal_row_id=order.signal_row_id, regime=regime, tick_size=str(TICK))
        )
    return events, decisions, snapshots


def test_the_fit_recovers_the_cost_per_regime_and_the_latency() -> None:
    events, decisions, snapshots = synthetic()
    result = fit(outcomes(events), decisions, MarketView.from_snapshots(snapshots))
    assert set(result.params) == {*REGIMES, ALL}
    for regime, truth in REGIMES.items():
        assert abs(result.params[regime] - truth) <= Decimal("0.2"), (regime, result.params[regime], truth)
        assert result.counts[regime] == 400
    assert result.latency_base_ms == LATENCY.base_ms
    assert result.latency_mean_extra_ms is not None
    assert abs(float(result.latency_mean_extra_ms) - LATENCY.mean_extra_ms) <= 0.1 * LATENCY.mean_extra_ms


def test_the_fit_recovers_a_square_root_impact() -> None:
    events, decisions, snapshots = synthetic("sqrt_impact", k_bps=Decimal(12), adv=Decimal(1000))
    result = fit(outcomes(events), decisions, MarketView.from_snapshots(snapshots), "sqrt_impact", Decimal(1000))
    assert abs(result.params[ALL] - 12) <= Decimal("0.6"), result.params


def test_the_printed_flags_are_what_replay_accepts() -> None:
    from worker.cli.replay_cmd import latency_from

    events, decisions, snapshots = synthetic()
    result = fit(outcomes(events), decisions, MarketView.from_snapshots(snapshots))
    spec = result.fill_model_spec()
    assert spec is not None and spec.startswith("by_regime:range=fixed_bps:")
    model = fill_model(spec)
    assert isinstance(model, ByRegime)
    assert dict(model.models) == {r: AdverseBps("fixed_bps", bps=result.params[r]) for r in REGIMES}
    assert model.default == AdverseBps("fixed_bps", bps=result.params[ALL])
    latency = latency_from(_Args(result.latency_spec()))
    assert latency is not None and latency.base_ms == result.latency_base_ms
    assert f"--fill-model '{spec}' --latency {result.latency_spec()}" in fit_lines(result)[-1]


class _Args:
    def __init__(self, latency: str | None) -> None:
        self.latency = latency


@pytest.mark.parametrize("spec", ["4", "x:6", "-1:6", "4:-1", "4:nan"])
def test_replay_refuses_a_bad_latency(spec: str) -> None:
    from worker.cli.replay_cmd import latency_from

    with pytest.raises(UsageError):
        latency_from(_Args(spec))


def test_by_regime_fills_each_order_by_its_regime() -> None:
    model = fill_model("by_regime:trend=fixed_bps:10,*=fixed_bps:0")
    quote = Quote(bid=Decimal("99.99"), ask=Decimal("100.00"))
    trend = order_ctx(1, "trend", Side.BUY, Decimal(1), OrderType.MARKET, None)
    other = order_ctx(2, "range", Side.BUY, Decimal(1), OrderType.MARKET, None)
    assert model.fill(trend, quote).px_fill == Decimal("100.10")
    assert model.fill(other, quote).px_fill == Decimal("100.00")
    with pytest.raises(ValueError, match="REGIME=SPEC"):
        fill_model("by_regime:trend=depth")


def test_latency_fit_of_a_constant_and_of_nothing() -> None:
    assert fit_latency([9, 9, 9]) == (9, Decimal(0))
    assert fit_latency([]) is None


def test_without_market_data_only_market_orders_with_a_price_are_fitted() -> None:
    events, decisions, _ = synthetic()
    result = fit(outcomes(events), decisions, None)
    # The MARKET orders carry no px_intent here (None): nothing has a reference.
    assert result.params == {}
    assert "no live taker fill" in "\n".join(fit_lines(result))
