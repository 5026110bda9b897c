"""TCA exports for pandas and friends: one row per order (`tca.COLUMNS`), as CSV or Parquet.

CSV writes decimals exactly as text. Parquet keeps them Decimal: prices, quantities and amounts
as decimal128(38, 12), bps as decimal128(18, 2) (pandas reads them as `decimal.Decimal`),
timestamps and durations as int64 milliseconds, `open` as bool, the rest as strings.
"""

from __future__ import annotations

import csv
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any

from worker.reporting.tca import COLUMNS, Tca, jsonable

_AMOUNT_SCALE = 12
_BPS_SCALE = 2
_AMOUNTS = ("qty", "qty_filled", "px_intent", "px_fill", "arrival_mid", "notional", "fee")
_BPS = ("shortfall_bps", "shortfall_intent_bps", "markout_1s_bps", "markout_10s_bps", "markout_60s_bps")
_INTS = ("decision_ts_ms", "fill_ts_ms", "time_to_fill_ms", "latency_ms")
_BOOLS = ("open",)


def write_csv(directory: Path, tca: Tca) -> list[Path]:
    """`orders.csv` (one row per order) and `pnl.csv` (one row per fill slice and symbol)."""
    directory.mkdir(parents=True, exist_ok=True)
    orders = directory / "orders.csv"
    with open(orders, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        for row in tca.rows:
            values = jsonable(row.as_dict())
            writer.writerow(["" if values[c] is None else values[c] for c in COLUMNS])
    pnl = directory / "pnl.csv"
    with open(pnl, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(("symbol", "ts_ms", "position", "avg_cost", "realized", "unrealized", "fees", "pnl"))
        for symbol, points in tca.pnl.items():
            for p in points:
                writer.writerow(
                    [symbol, p.ts_ms, *jsonable([p.position, p.avg_cost, p.realized, p.unrealized, p.fees, p.pnl])]
                )
    return [orders, pnl]


def _scaled(value: Decimal | None, scale: int) -> Decimal | None:
    if value is None:
        return None
    return value.quantize(Decimal(1).scaleb(-scale), rounding=ROUND_HALF_EVEN)


def write_parquet(path: Path, tca: Tca) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    fields = []
    for name in COLUMNS:
        if name in _AMOUNTS:
            kind: Any = pa.decimal128(38, _AMOUNT_SCALE)
        elif name in _BPS:
            kind = pa.decimal128(18, _BPS_SCALE)
        elif name in _INTS:
            kind = pa.int64()
        elif name in _BOOLS:
            kind = pa.bool_()
        else:
            kind = pa.string()
        fields.append(pa.field(name, kind))
    schema = pa.schema(fields)
    columns: dict[str, list[Any]] = {name: [] for name in COLUMNS}
    for row in tca.rows:
        for name, value in row.as_dict().items():
            if name in _AMOUNTS:
                value = _scaled(value, _AMOUNT_SCALE)
            elif name in _BPS:
                value = _scaled(value, _BPS_SCALE)
            columns[name].append(value)
    table = pa.Table.from_pydict(columns, schema=schema)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path
