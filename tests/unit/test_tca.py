"""TCA figures against a case computed by hand (shortfall, markouts, fill rate, fees, PnL), and
the Parquet / CSV exports read back."""

from __future__ import annotations

import csv
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from worker.contract.events import ExecEvent
from worker.contract.messages import MarketSnapshot
from worker.reporting.export import write_csv, write_parquet
from worker.reporting.tca import FeeSchedule, Tca, build_tca, group_stats, summary_json

D = Decimal
T0 = 1_767_225_600_000  # 2026-01-01 00:00 UTC; times below are ms after it
REQUIRED = [
    "client_order_id",
    "symbol",
    "side",
    "status",
    "regime",
    "scenario",
    "qty",
    "qty_filled",
    "px_intent",
    "px_fill",
    "arrival_mid",
    "shortfall_bps",
    "markout_1s_bps",
    "markout_10s_bps",
    "markout_60s_bps",
    "fee",
    "latency_ms",
]


def event(coid: str, seq: int, status: str, **fields: Any) -> ExecEvent:
    base: dict[str, Any] = {
        "event_id": f"{coid}.{seq}",
        "client_order_id": coid,
        "signal_row_id": f"row-{coid}",
        "symbol": "BTCUSDT",
        "side": "BUY",
        "qty": "1.000",
        "px_intent": "101.00",
        "px_sent": "101.00",
        "px_fill": None,
        "qty_filled": "0",
        "rounding_applied": False,
        "rounding_diff": "0",
        "slippage_bps": None,
        "exchange_order_id": None,
        "status": status,
        "reason": None,
        "sent_ts_ms": None,
        "ack_ts_ms": None,
        "event_ts_ms": 0,
        "latency_ms": None,
        "executor": "backtest",
        "mode": "default",
        "scenario": "base",
        "source": {"topic": "t", "partition": 0, "offset": seq},
    }
    merged = base | fields
    for key in ("sent_ts_ms", "ack_ts_ms", "event_ts_ms"):
        if merged[key] is not None:
            merged[key] += T0
    return ExecEvent.model_validate(merged)


def snap(t: int, bid: str, ask: str) -> MarketSnapshot:
    return MarketSnapshot.model_validate({"symbol": "BTCUSDT", "event_time_ms": T0 + t, "bid": bid, "ask": ask})


MARKET = [
    snap(1_000, "99", "101"),  # mid 100
    snap(2_000, "100", "102"),  # mid 101
    snap(11_000, "101", "103"),  # mid 102
    snap(61_500, "97", "99"),  # mid 98
    snap(200_000, "99", "101"),  # mid 100 (the data reaches past every markout horizon)
]

EVENTS = [
    # A: BUY 2 at 101, decided at 1,500, filled at once (ack 1,510): taker.
    event(
        "A",
        1,
        "FILLED",
        qty="2.000",
        px_fill="101.00",
        qty_filled="2.000",
        sent_ts_ms=1_500,
        ack_ts_ms=1_510,
        event_ts_ms=1_500,
        latency_ms=10,
    ),
    # B: SELL 1 with a limit of 103, decided at 2,500, rests, filled at 11,200: maker.
    event("B", 1, "ACCEPTED", side="SELL", px_intent="103.00", px_sent="103.00", event_ts_ms=2_500, latency_ms=5),
    event(
        "B",
        2,
        "FILLED",
        side="SELL",
        px_intent="103.00",
        px_sent="103.00",
        px_fill="103.00",
        qty_filled="1.000",
        ack_ts_ms=11_200,
        event_ts_ms=2_500,
        latency_ms=5,
    ),
    # C: denied by a gate, never sent.
    event("C", 1, "DENIED", reason="warmup", event_ts_ms=3_000),
    # D: BUY 1 resting when the data ends: open, not final.
    event("D", 1, "ACCEPTED", px_intent="90.00", px_sent="90.00", event_ts_ms=4_000, latency_ms=7),
]


def tca() -> Tca:
    # Events in scrambled order: each order's history is put back in sequence.
    return build_tca(reversed(EVENTS), MARKET, fees=FeeSchedule(maker_bps=D(2), taker_bps=D(5)))


def test_shortfall_markouts_and_fees_of_known_orders() -> None:
    rows = {row.client_order_id: row for row in tca().rows}
    a, b = rows["A"], rows["B"]
    # A: arrival mid 100 (snapshot at 1,000); paid 101: (101 - 100) / 100 = +100 bps of cost.
    assert (a.arrival_mid, a.shortfall_bps, a.shortfall_intent_bps) == (D("100.000"), D("100.00"), D("0.00"))
    # Markouts from 1,510: mids 101 (+1 s), 102 (+10 s), 98 (+60 s) against 101.
    assert (a.markout_1s_bps, a.markout_10s_bps, a.markout_60s_bps) == (D("0.00"), D("99.01"), D("-297.03"))
    # Taker fee 5 bps on 202.00 = 0.101, at the tick's decimals.
    assert (a.liquidity, a.notional, a.fee, a.time_to_fill_ms) == ("taker", D("202.00"), D("0.10"), 10)
    # B: arrival mid 101 (snapshot at 2,000); sold at 103: -(103 - 101) / 101 = -198.02 bps (a gain).
    assert (b.arrival_mid, b.shortfall_bps) == (D("101.000"), D("-198.02"))
    # Markouts from 11,200: mids 102, 102, 98 against 103, sign reversed for a sell.
    assert (b.markout_1s_bps, b.markout_10s_bps, b.markout_60s_bps) == (D("97.09"), D("97.09"), D("485.44"))
    assert (b.liquidity, b.fee, b.time_to_fill_ms) == ("maker", D("0.02"), 8_700)
    assert rows["C"].shortfall_bps is None and rows["D"].open and not rows["C"].open


def test_fill_rate_counts_open_orders_as_open_and_skips_unsent_ones() -> None:
    result = tca()
    stats = group_stats(result.rows, "symbol")["BTCUSDT"]
    # Sent: A, B, D (C was denied). Filled: A, B. Quantity: 3 of 4.
    assert (stats["orders"], stats["sent"], stats["filled"], stats["open"]) == (4, 3, 2, 1)
    assert (stats["fill_rate"], stats["qty_fill_rate"]) == (D("0.6667"), D("0.7500"))
    summary = summary_json(result, {"seed": 0})
    assert (summary["orders"], summary["final"], summary["open"]) == (4, 3, 1)
    assert summary["denies_throttles_per_minute"] == {str(T0): {"DENIED:warmup": 1}}


def test_positions_and_pnl_over_time() -> None:
    points = tca().pnl["BTCUSDT"]
    first, last = points
    # After A: long 2 at 101, marked at the mid 100: unrealized -2; fees 0.101.
    assert (first.position, first.avg_cost, first.unrealized, first.fees) == (
        D("2.000"),
        D("101.0000"),
        D("-2.00"),
        D("0.10"),
    )
    # After B: sold 1 at 103: realized +2; long 1 at 101 marked at 102: +1; fees 0.1216.
    assert (last.position, last.realized, last.unrealized, last.fees, last.pnl) == (
        D("1.000"),
        D("2.00"),
        D("1.00"),
        D("0.12"),
        D("2.88"),
    )


def test_parquet_export_reads_back_with_the_listed_columns_as_decimals(tmp_path: Path) -> None:
    path = write_parquet(tmp_path / "orders.parquet", tca())
    table = pq.read_table(path)
    assert set(REQUIRED) <= set(table.column_names)
    assert table.num_rows == 4
    assert pa.types.is_decimal(table.schema.field("shortfall_bps").type)
    assert pa.types.is_decimal(table.schema.field("px_fill").type)
    rows = {row["client_order_id"]: row for row in table.to_pylist()}
    assert rows["A"]["shortfall_bps"] == D("100.00") and rows["B"]["markout_60s_bps"] == D("485.44")
    assert rows["A"]["fee"] == D("0.10") and rows["D"]["px_fill"] is None and rows["D"]["open"] is True
    assert rows["C"]["status"] == "DENIED" and rows["A"]["latency_ms"] == 10


def test_csv_export_has_one_row_per_order(tmp_path: Path) -> None:
    orders, pnl = write_csv(tmp_path, tca())
    with open(orders, encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["client_order_id"] for r in rows] == ["A", "B", "C", "D"]
    assert set(REQUIRED) <= set(rows[0])
    assert rows[1]["shortfall_bps"] == "-198.02" and rows[2]["shortfall_bps"] == ""
    assert pnl.read_text().count("\n") == 3  # header + two fills
