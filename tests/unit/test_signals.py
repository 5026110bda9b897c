from decimal import Decimal

import pytest

from worker.contract.enums import OrderType, Side
from worker.contract.messages import Signal
from worker.policy.modes import ScenarioParams, SymbolFilters
from worker.policy.signals import MissingFilters, signal_to_decision

PARAMS = ScenarioParams(Decimal("2.0"), Decimal(30), Decimal(20), Decimal("6"), Decimal("0.01"), 5, 50)
FILTERS = {"BTCUSDT": SymbolFilters(Decimal("0.01"), Decimal("0.00001"), Decimal(5))}


def signal(score: str, symbol: str = "BTCUSDT") -> Signal:
    return Signal.model_validate_json(
        Signal(
            signal_row_id="s1",
            ts_ms=1_767_225_600_500,
            event_ts_ms=1_767_225_600_000,
            symbol=symbol,
            score=Decimal(score),
            regime="trend",
            warmup=False,
            guard_reason=None,
            consistency=0.9,
            weak_signal_throttle=False,
            gate_reason_stats={"spread_wide": 3},
        ).model_dump_json()
    )


@pytest.mark.parametrize(("score", "side"), [("2.0", Side.BUY), ("3.7", Side.BUY), ("-2.0", Side.SELL)])
def test_a_strong_signal_becomes_a_market_order(score: str, side: Side) -> None:
    decision = signal_to_decision(signal(score), PARAMS, "day", FILTERS)
    assert decision is not None
    assert (decision.side, decision.order_type, decision.px) == (side, OrderType.MARKET, None)
    assert decision.qty == Decimal("0.01") and decision.scenario == "day"
    assert decision.costs_bps == Decimal("6") and decision.tick_size == Decimal("0.01")


@pytest.mark.parametrize("score", ["1.999", "-1.999", "0"])
def test_a_weak_signal_is_no_action(score: str) -> None:
    assert signal_to_decision(signal(score), PARAMS, "day", FILTERS) is None


def test_a_symbol_without_a_grid_cannot_be_sized() -> None:
    with pytest.raises(MissingFilters, match="ETHUSDT"):
        signal_to_decision(signal("5", symbol="ETHUSDT"), PARAMS, "day", FILTERS)
