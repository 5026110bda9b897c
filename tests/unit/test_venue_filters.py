"""The venue's grid against a decision's: compatible passes, mismatch is denied or re-gridded."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from tests.factories import decision_bytes
from worker.codec.json_codec import decode_json
from worker.contract.enums import OrderStatus
from worker.contract.messages import Decision
from worker.contract.orders import SourceRef
from worker.core.backtest import BacktestExecutor
from worker.core.engine import ExecutionEngine
from worker.core.order_table import OrderTable
from worker.core.venue_filters import (
    GridPolicy,
    VenueFilters,
    VenueFiltersError,
    check_decision,
    parse_exchange_info,
)
from worker.policy.rng import Rng
from worker.runtime.venue import handle

pytestmark = pytest.mark.unit

VENUE = {"BTCUSDT": VenueFilters(Decimal("0.01"), Decimal("0.00001"), Decimal("5"))}


def decision(**fields: object) -> Decision:
    return decode_json(Decision, decision_bytes(**fields))


def symbol(name: str, tick: str, step: str, **notional: Any) -> dict[str, Any]:
    filters: list[dict[str, Any]] = [
        {"filterType": "PRICE_FILTER", "minPrice": "0.01", "maxPrice": "1000000", "tickSize": tick},
        {"filterType": "LOT_SIZE", "minQty": "0.00001", "maxQty": "9000", "stepSize": step},
    ]
    if notional:
        filters.append(notional)
    return {"symbol": name, "status": "TRADING", "filters": filters}


def test_parse_reads_notional_or_min_notional_and_skips_symbols_not_trading() -> None:
    info = {
        "symbols": [
            symbol("BTCUSDT", "0.01000000", "0.00001000", filterType="NOTIONAL", minNotional="5.00000000"),
            symbol("OLDBTC", "0.00000100", "1.00000000", filterType="MIN_NOTIONAL", minNotional="0.0001"),
            {**symbol("HALTUSDT", "0.1", "1"), "status": "HALT"},
        ]
    }
    parsed = parse_exchange_info(info)
    assert set(parsed) == {"BTCUSDT", "OLDBTC"}
    assert parsed["BTCUSDT"] == VenueFilters(
        Decimal("0.01"), Decimal("0.00001"), Decimal("5"), Decimal("0.00001"), Decimal("9000"), Decimal("0.01"),
        Decimal("1000000"),
    )  # fmt: skip
    assert parsed["OLDBTC"].min_notional == Decimal("0.0001")
    with pytest.raises(VenueFiltersError, match="LOT_SIZE"):
        parse_exchange_info({"symbols": [{"symbol": "X", "filters": []}]})
    with pytest.raises(VenueFiltersError, match="symbols"):
        parse_exchange_info({})


@pytest.mark.parametrize("policy", list(GridPolicy))
def test_a_compatible_grid_passes_unchanged(policy: GridPolicy) -> None:
    for fields in ({}, {"tick_size": "0.1", "step_size": "0.001", "min_notional": "10"}):
        original = decision(**fields)
        verdict = check_decision(original, VENUE, policy)
        assert (verdict.decision, verdict.reason, verdict.regridded) == (original, None, False)


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"tick_size": "0.001"}, "venue_filter:tick_size 0.001 vs 0.01"),
        ({"tick_size": "0.015"}, "venue_filter:tick_size 0.015 vs 0.01"),
        ({"step_size": "0.000001"}, "venue_filter:step_size 0.000001 vs 0.00001"),
        ({"min_notional": "1"}, "venue_filter:min_notional 1 vs 5"),
        ({"symbol": "NOPEUSDT"}, "venue_filter:unknown_symbol"),
    ],
)
def test_a_mismatch_is_denied_with_its_reason(fields: dict[str, str], reason: str) -> None:
    verdict = check_decision(decision(**fields), VENUE, GridPolicy.DENY)
    assert verdict.reason == reason


async def test_under_the_venue_policy_the_order_is_rounded_on_the_venues_grid() -> None:
    finer = decision(tick_size="0.001", step_size="0.000001", min_notional="1", px="64250.123", qty="0.0123456")
    verdict = check_decision(finer, VENUE, GridPolicy.VENUE)
    assert verdict.reason is None and verdict.regridded
    assert (verdict.decision.tick_size, verdict.decision.step_size, verdict.decision.min_notional) == (
        Decimal("0.01"),
        Decimal("0.00001"),
        Decimal("5"),
    )
    assert (verdict.decision.px, verdict.decision.qty, verdict.decision.signal_row_id) == (
        finer.px,
        finer.qty,
        finer.signal_row_id,
    )
    engine = ExecutionEngine(BacktestExecutor(Rng(1)))
    source = SourceRef(topic="decisions.v1", partition=0, offset=1)
    (event,) = (await handle(engine, OrderTable(), verdict.decision, source)).events
    assert event.status is OrderStatus.FILLED
    assert (event.px_sent, event.qty) == (Decimal("64250.12"), Decimal("0.01234"))  # venue-valid

    unknown = check_decision(decision(symbol="NOPEUSDT"), VENUE, GridPolicy.VENUE)
    assert unknown.reason == "venue_filter:unknown_symbol"  # no grid to adopt: denied either way
