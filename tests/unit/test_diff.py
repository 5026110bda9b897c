"""`execworker diff`: the join and the attribution of each cause, on hand-built exec-events."""

from __future__ import annotations

import json
import random
from decimal import Decimal
from typing import Any

import pytest

from worker.contract.events import ExecEvent
from worker.contract.messages import MarketSnapshot
from worker.reporting.diff import (
    CAUSES,
    DiffConfig,
    diff_orders,
    summarize,
    text_summary,
    text_table,
    to_csv,
    to_json,
)

T0 = 1_767_225_600_000


def event(
    coid: str = "ewA",
    seq: int = 1,
    status: str = "FILLED",
    *,
    row: str | None = None,
    side: str = "BUY",
    qty: str = "1",
    px_sent: str | None = "100.00",
    px_fill: str | None = None,
    qty_filled: str | None = None,
    latency: int | None = 5,
    reason: str | None = None,
    mode: str = "default",
    scenario: str = "base",
    executor: str = "backtest",
) -> ExecEvent:
    filled = qty_filled if qty_filled is not None else (qty if status == "FILLED" else "0")
    fill_px = px_fill if px_fill is not None else (px_sent if Decimal(filled) > 0 else None)
    return ExecEvent(
        event_id=f"{coid}.{seq}",
        client_order_id=coid,
        signal_row_id=row or f"row-{coid}",
        symbol="BTCUSDT",
        side=side,
        qty=Decimal(qty),
        px_intent=Decimal("100.00"),
        px_sent=Decimal(px_sent) if px_sent else None,
        px_fill=Decimal(fill_px) if fill_px else None,
        qty_filled=Decimal(filled),
        rounding_applied=False,
        rounding_diff=Decimal(0),
        slippage_bps=None,
        exchange_order_id=None,
        status=status,
        reason=reason,
        sent_ts_ms=T0,
        ack_ts_ms=None if latency is None else T0 + latency,
        event_ts_ms=T0,
        latency_ms=latency,
        executor=executor,
        mode=mode,
        scenario=scenario,
        source={"topic": "decisions", "partition": 0, "offset": 0},
    )


def live(coid: str = "ewA", status: str = "FILLED", **kw: Any) -> list[ExecEvent]:
    """A live order: its intent (SUBMITTED, no answer yet), then the venue's answer."""
    order = {k: v for k, v in kw.items() if k in ("row", "side", "qty", "px_sent", "mode", "scenario")}
    intent = event(coid, 1, "SUBMITTED", latency=None, executor="sandbox", **order)
    return [intent, event(coid, 2, status, executor="sandbox", **kw)]


def one(live_events: list[ExecEvent], replay_events: list[ExecEvent], **kw: Any) -> tuple[str, str]:
    rows = diff_orders(live_events, replay_events, **kw)
    assert len(rows) == 1, rows
    return rows[0].cause, rows[0].detail


def test_the_same_outcome_is_a_match() -> None:
    assert one(live(), [event()]) == ("match", "")


def test_orders_on_one_side_only_are_reported_as_such() -> None:
    rows = diff_orders(live("ewA") + live("ewB"), [event("ewA"), event("ewC")])
    assert [(r.client_order_id, r.cause) for r in rows] == [
        ("ewA", "match"),
        ("ewB", "live_only"),
        ("ewC", "replay_only"),
    ]
    assert rows[1].replay is None and rows[2].live is None


def test_another_id_for_the_same_decision_is_a_rounding_difference() -> None:
    # The id hashes the rounded qty and px: a different rounding gives a different id.
    cause, detail = one(live("ewL", row="r1", qty="1.01"), [event("ewR", row="r1", qty="1.00")])
    assert cause == "rounding" and "1.01" in detail
    # ... but two one-sided orders of one decision on a side cannot be paired: one-sided.
    rows = diff_orders(live("ewL1", row="r1") + live("ewL2", row="r1"), [event("ewR", row="r1")])
    assert sorted(r.cause for r in rows) == ["live_only", "live_only", "replay_only"]


def test_the_same_id_sent_at_another_price_is_rounding() -> None:
    assert one(live(px_sent="100.01"), [event(px_sent="100.00")])[0] == "rounding"
    # A gated order was never sent: no px_sent, and that is no rounding difference.
    assert one(live(status="DENIED", reason="min_notional", px_sent=None), [event()])[0] == "gate_or_mode"


@pytest.mark.parametrize(
    ("live_status", "live_reason", "replay_status", "replay_reason"),
    [
        ("THROTTLED", "rate_wall", "FILLED", None),  # gated live only
        ("FILLED", None, "DENIED", "warmup"),  # gated in the replay only
        ("DENIED", "warmup", "DENIED", "guard:stale_book"),  # both gated, for other reasons
    ],
)
def test_a_gate_on_one_side_only_is_a_gate_difference(
    live_status: str, live_reason: str | None, replay_status: str, replay_reason: str | None
) -> None:
    cause, _ = one(live(status=live_status, reason=live_reason), [event(status=replay_status, reason=replay_reason)])
    assert cause == "gate_or_mode"


def test_the_same_gate_on_both_sides_is_a_match() -> None:
    assert (
        one(
            live(status="DENIED", reason="warmup", latency=None),
            [event(status="DENIED", reason="warmup", latency=None)],
        )[0]
        == "match"
    )


def test_another_mode_is_a_mode_difference() -> None:
    assert one(live(mode="cautious"), [event(mode="default")])[0] == "gate_or_mode"
    assert one(live(scenario="wide"), [event(scenario="base")])[0] == "gate_or_mode"


def test_a_live_reject_is_a_venue_reject() -> None:
    cause, detail = one(live(status="REJECTED", reason="venue:-1013:Filter failure: NOTIONAL"), [event()])
    assert cause == "venue_reject" and "-1013" in detail


def test_a_replay_reject_for_want_of_a_price_is_fill_model_error() -> None:
    cause, _ = one(live(), [event(status="REJECTED", reason="no_reference_price")])
    assert cause == "fill_model"


@pytest.mark.parametrize(
    ("live_kw", "replay_kw"),
    [
        ({"px_fill": "100.10"}, {}),  # price
        ({"status": "PARTIALLY_FILLED", "qty_filled": "0.5"}, {}),  # quantity (and status)
        ({"status": "ACCEPTED"}, {}),  # rested live, filled in the backtest
        ({}, {"status": "EXPIRED", "reason": "limit_not_reached"}),  # filled live only
    ],
)
def test_different_outcomes_are_fill_model_error(live_kw: dict[str, Any], replay_kw: dict[str, Any]) -> None:
    assert one(live(**live_kw), [event(**replay_kw)])[0] == "fill_model"


def test_a_tick_apart_is_a_difference_even_below_a_hundredth_of_a_bps() -> None:
    # 0.02 on 63443.21 is 0.003 bps: "0.00" when printed, but not the same price.
    cause, detail = one(live(px_sent="63443.30", px_fill="63443.23"), [event(px_sent="63443.30", px_fill="63443.21")])
    assert cause == "fill_model" and "0.00 bps (63443.23 vs 63443.21)" in detail


def test_a_price_within_the_tolerance_is_the_same() -> None:
    # 100.10 vs 100.00 is 10 bps.
    assert one(live(px_fill="100.10"), [event()], config=DiffConfig(Decimal("10")))[0] == "match"
    assert one(live(px_fill="100.10"), [event()], config=DiffConfig(Decimal("9.99")))[0] == "fill_model"


def test_the_same_outcome_later_is_latency() -> None:
    assert one(live(latency=200), [event(latency=5)]) == ("latency", "same outcome, latency +195 ms")
    assert one(live(latency=55), [event(latency=5)])[0] == "match"  # within the default 50 ms
    assert one(live(latency=55), [event(latency=5)], config=DiffConfig(latency_tolerance_ms=49))[0] == "latency"


def snapshot(at_ms: int, bid: str, ask: str) -> MarketSnapshot:
    return MarketSnapshot(symbol="BTCUSDT", event_time_ms=at_ms, bid=Decimal(bid), ask=Decimal(ask))


def test_a_price_difference_the_market_moved_by_is_latency() -> None:
    # The backtest arrived at +5 ms (mid 100.00), the venue at +300 ms (mid 100.10): a BUY filled
    # 10 bps higher live is explained by the move.
    market = [snapshot(T0, "99.99", "100.01"), snapshot(T0 + 100, "100.09", "100.11")]
    live_events, replay_events = live(px_fill="100.11", latency=300), [event(px_fill="100.01")]
    cause, detail = one(live_events, replay_events, market=market)
    assert cause == "latency" and "market moved 10.00 bps" in detail
    # No market data: the same difference is the fill model's.
    assert one(live_events, replay_events)[0] == "fill_model"
    # A move against the difference explains nothing.
    market_down = [snapshot(T0, "99.99", "100.01"), snapshot(T0 + 100, "99.89", "99.91")]
    assert one(live_events, replay_events, market=market_down)[0] == "fill_model"


def test_a_limit_reached_at_one_arrival_only_is_latency() -> None:
    # BUY LIMIT 100.00: the backtest arrived while the ask was 100.00 (filled at once); the venue
    # arrived after the ask moved to 100.05 (rested).
    market = [snapshot(T0, "99.98", "100.00"), snapshot(T0 + 100, "100.03", "100.05")]
    live_events = live(status="ACCEPTED", latency=300)
    cause, detail = one(live_events, [event(latency=5)], market=market)
    assert cause == "latency" and "limit was reached at one arrival only" in detail
    # A market that never reached the limit does not explain the backtest's fill.
    far = [snapshot(T0, "100.03", "100.05")]
    assert one(live_events, [event(latency=5)], market=far)[0] == "fill_model"


def test_precedence_one_cause_per_order() -> None:
    # rounding before gate: another id for the decision and a gate on one side.
    cause, _ = one(live("ewL", row="r1", status="THROTTLED", reason="rate_wall"), [event("ewR", row="r1")])
    assert cause == "rounding"
    # gate before venue reject: the replay denied what the venue rejected.
    assert (
        one(live(status="REJECTED", reason="venue:-2010"), [event(status="DENIED", reason="warmup")])[0]
        == "gate_or_mode"
    )
    # venue reject before latency and fill model.
    assert one(live(status="REJECTED", reason="venue:-2010", latency=900), [event()])[0] == "venue_reject"
    # latency (explained by the market) before fill model.
    market = [snapshot(T0, "99.99", "100.01"), snapshot(T0 + 100, "100.09", "100.11")]
    assert one(live(px_fill="100.11", latency=300), [event(px_fill="100.01")], market=market)[0] == "latency"


def test_summary_counts_every_cause_and_the_differences() -> None:
    live_events = (
        live("ewA", px_fill="100.10")
        + live("ewB", latency=205)
        + live("ewC")
        + live("ewD", side="SELL", px_fill="99.80")
    )
    replay_events = [event("ewA"), event("ewB"), event("ewC"), event("ewD", side="SELL"), event("ewE")]
    summary = summarize(diff_orders(live_events, replay_events))
    assert list(summary["by_cause"]) == list(CAUSES)
    assert summary["by_cause"]["fill_model"] == 2
    assert summary["by_cause"]["latency"] == 1
    assert summary["by_cause"]["match"] == 1
    assert summary["by_cause"]["replay_only"] == 1
    assert summary["orders"] == 5 and summary["both_sides"] == 4
    # A: BUY 10 bps worse; D: SELL at 99.80 vs 100.00, 20 bps worse; B, C: 0.
    price = summary["px_diff_bps"]
    assert price["n"] == 4
    assert price["mean"] == Decimal("7.50")
    assert price["p50"] == Decimal("0.00")
    assert price["p95"] == Decimal("20.00")
    assert summary["latency_diff_ms"]["p95"] == Decimal(200)
    lines = text_summary(summary)
    assert "fill_model    2" in "\n".join(lines)


def test_outputs_are_sorted_and_deterministic() -> None:
    live_events = [e for c in ("ewC", "ewA", "ewB") for e in live(c, px_fill="100.05")]
    replay_events = [event(c) for c in ("ewB", "ewC", "ewA")]
    first = diff_orders(live_events, replay_events)
    shuffled_live, shuffled_replay = list(live_events), list(replay_events)
    random.Random(4).shuffle(shuffled_live)
    random.Random(5).shuffle(shuffled_replay)
    second = diff_orders(shuffled_live, shuffled_replay)
    assert [r.client_order_id for r in first] == ["ewA", "ewB", "ewC"]
    assert to_csv(first) == to_csv(second)
    assert json.dumps(to_json(first, summarize(first))) == json.dumps(to_json(second, summarize(second)))
    csv_lines = to_csv(first).splitlines()
    assert csv_lines[0].startswith("client_order_id,signal_row_id,symbol,side,regime,cause")
    assert csv_lines[1].startswith("ewA,row-ewA,BTCUSDT,BUY,,fill_model,fill price 5.00 bps (100.05 vs 100.00),FILLED")
    assert text_table(first)[1].split()[:4] == ["ewA", "BTCUSDT", "BUY", "fill_model"]
