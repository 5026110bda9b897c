"""Transaction-cost analysis over exec-events: one row per order, and what they add up to.

Definitions (all in Decimal; bps = 1/10,000; `sign` is +1 for BUY, -1 for SELL):

- *decision time*: the `event_ts_ms` of the order's first event (the command's market time);
  *arrival mid*: the market's mid (bid+ask)/2 at the decision time (the latest snapshot at or
  before it), from `--market`.
- *fill slices*: each event that raises `qty_filled` adds a slice of (qty, price), the price
  recovered from the change of the average `px_fill`; its time is the event's `ack_ts_ms`
  (market time of the fill in backtests; the venue's answer live), else its `event_ts_ms`.
  A slice is *maker* when it arrives in a later event than the order's first (the order rested),
  else *taker*.
- *implementation shortfall* `shortfall_bps = sign * (px_fill - arrival_mid) / arrival_mid`:
  the cost of the filled part against the mid when the decision was taken (positive = paid).
  `shortfall_intent_bps` is the same against `px_intent`; for a LIMIT order that is its limit
  price, which a fill can never be worse than, so it is never the headline.
  Unfilled quantity (opportunity cost) is not in either; it shows as the fill rate.
- *markout* `markout_Hs_bps = sign * (mid(t_fill + H) - px_fill) / px_fill`, H = 1, 10, 60 s,
  `t_fill` the last slice's time: positive = the market moved our way after the fill. Empty
  when the market data ends before `t_fill + H`.
- *time to fill*: last slice's time minus the decision time.
- *fill rate* (per group): orders with any fill / orders sent (DENIED and THROTTLED never reach
  a venue and are left out); *qty fill rate*: filled / ordered quantity of the sent orders.
- *fees*: each slice's notional times the maker or taker rate given to the report. Backtest
  fill prices are all-in (the fill model folds its fees into the price), so for a backtest
  leave the rates at 0 unless you want fees on top of that.
- *positions and PnL* per symbol, slice by slice in time order, average-cost: realized PnL when
  a slice reduces the position, unrealized = position * (mark - average cost) with the mark the
  mid at that time (the slice's price without market data); `pnl` = realized + unrealized - fees.

Amounts are shown at the instrument's precision: prices at the tick's decimals (from the
decisions, else from the prices seen), notionals, fees and PnL at the same decimals, quantities
at the step's decimals, bps at 2 decimals.
"""

from __future__ import annotations

import bisect
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from worker.contract.enums import TERMINAL_STATUSES, OrderStatus, Side
from worker.contract.events import ExecEvent
from worker.contract.messages import Decision, MarketSnapshot
from worker.policy.ids import event_seq
from worker.runtime.summary import percentile

BPS = Decimal(10_000)
BPS_PLACES = Decimal("0.01")
MARKOUT_HORIZONS_S = (1, 10, 60)
NOT_SENT = frozenset({OrderStatus.DENIED, OrderStatus.THROTTLED})
MAKER, TAKER = "maker", "taker"

# One row per order: the export's columns, in order (CSV and Parquet).
COLUMNS = (
    "client_order_id",
    "signal_row_id",
    "symbol",
    "side",
    "status",
    "open",
    "regime",
    "scenario",
    "mode",
    "reason",
    "qty",
    "qty_filled",
    "px_intent",
    "px_fill",
    "arrival_mid",
    "shortfall_bps",
    "shortfall_intent_bps",
    "markout_1s_bps",
    "markout_10s_bps",
    "markout_60s_bps",
    "liquidity",
    "notional",
    "fee",
    "decision_ts_ms",
    "fill_ts_ms",
    "time_to_fill_ms",
    "latency_ms",
)


class MidSeries:
    """Mid prices per symbol in event-time order: `at(symbol, t)` is the mid of the latest
    snapshot at or before t; None before the first, or after the last when `strict`."""

    def __init__(self, snapshots: Iterable[MarketSnapshot]) -> None:
        rows: dict[str, list[tuple[int, Decimal]]] = defaultdict(list)
        for snap in snapshots:
            rows[snap.symbol].append((snap.event_time_ms, (snap.bid + snap.ask) / 2))
        self._times: dict[str, list[int]] = {}
        self._mids: dict[str, list[Decimal]] = {}
        for symbol, points in rows.items():
            points.sort(key=lambda point: point[0])
            self._times[symbol] = [t for t, _ in points]
            self._mids[symbol] = [m for _, m in points]

    def __bool__(self) -> bool:
        return bool(self._times)

    def at(self, symbol: str, at_ms: int, strict: bool = False) -> Decimal | None:
        times = self._times.get(symbol)
        if not times or (strict and at_ms > times[-1]):
            return None
        index = bisect.bisect_right(times, at_ms) - 1
        return self._mids[symbol][index] if index >= 0 else None


@dataclass(frozen=True, slots=True)
class FeeSchedule:
    maker_bps: Decimal = Decimal(0)
    taker_bps: Decimal = Decimal(0)

    def rate(self, liquidity: str) -> Decimal:
        return (self.maker_bps if liquidity == MAKER else self.taker_bps) / BPS


@dataclass(frozen=True, slots=True)
class Slice:
    """One fill: part of an order's quantity at one price and time."""

    client_order_id: str
    symbol: str
    side: Side
    qty: Decimal
    px: Decimal
    ts_ms: int
    liquidity: str
    fee: Decimal


@dataclass(frozen=True, slots=True)
class Precision:
    price: Decimal  # e.g. Decimal("0.01")
    qty: Decimal

    def px(self, value: Decimal | None, extra: int = 0) -> Decimal | None:
        if value is None:
            return None
        return value.quantize(self.price.scaleb(-extra), rounding=ROUND_HALF_EVEN)

    def amount(self, value: Decimal) -> Decimal:
        return value.quantize(self.price, rounding=ROUND_HALF_EVEN)

    def quantity(self, value: Decimal) -> Decimal:
        return value.quantize(self.qty, rounding=ROUND_HALF_EVEN)


@dataclass
class OrderRow:
    client_order_id: str
    signal_row_id: str
    symbol: str
    side: str
    status: str
    open: bool
    regime: str
    scenario: str
    mode: str
    reason: str | None
    qty: Decimal
    qty_filled: Decimal
    px_intent: Decimal | None
    px_fill: Decimal | None
    arrival_mid: Decimal | None
    shortfall_bps: Decimal | None
    shortfall_intent_bps: Decimal | None
    markout_1s_bps: Decimal | None
    markout_10s_bps: Decimal | None
    markout_60s_bps: Decimal | None
    liquidity: str | None
    notional: Decimal
    fee: Decimal
    decision_ts_ms: int
    fill_ts_ms: int | None
    time_to_fill_ms: int | None
    latency_ms: int | None

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in COLUMNS}


@dataclass
class PnlPoint:
    ts_ms: int
    position: Decimal
    avg_cost: Decimal
    realized: Decimal
    unrealized: Decimal
    fees: Decimal
    value: Decimal  # position * mark (quote units)

    @property
    def pnl(self) -> Decimal:
        return self.realized + self.unrealized - self.fees


@dataclass
class Tca:
    rows: list[OrderRow]
    slices: list[Slice]
    pnl: dict[str, list[PnlPoint]]
    precision: dict[str, Precision]
    events: int
    has_market: bool
    fees: FeeSchedule
    gates_over_time: dict[str, Counter[str]] = field(default_factory=dict)  # minute -> status:reason


def bps(numerator: Decimal, denominator: Decimal) -> Decimal:
    return (numerator / denominator * BPS).quantize(BPS_PLACES, rounding=ROUND_HALF_EVEN)


def _sign(side: Side) -> Decimal:
    return Decimal(1) if side is Side.BUY else Decimal(-1)


def _places(values: Iterable[Decimal]) -> Decimal:
    """The finest quantum among values as written (their exponent), at most 10 decimals."""
    exponent = 0
    for value in values:
        value_exponent = value.as_tuple().exponent
        if isinstance(value_exponent, int):
            exponent = min(exponent, value_exponent)
    return Decimal(1).scaleb(max(exponent, -10))


def precisions(events: Sequence[ExecEvent], decisions: Mapping[str, Decision]) -> dict[str, Precision]:
    """Price and quantity quanta per symbol: the decisions' tick and step where known, else the
    finest decimals among the prices sent and quantities ordered (both already on the grid)."""
    ticks: dict[str, set[Decimal]] = defaultdict(set)
    steps: dict[str, set[Decimal]] = defaultdict(set)
    for decision in decisions.values():
        ticks[decision.symbol].add(decision.tick_size)
        steps[decision.symbol].add(decision.step_size)
    prices: dict[str, list[Decimal]] = defaultdict(list)
    quantities: dict[str, list[Decimal]] = defaultdict(list)
    for event in events:
        if event.px_sent is not None:
            prices[event.symbol].append(event.px_sent)
        quantities[event.symbol].append(event.qty)
    out: dict[str, Precision] = {}
    for symbol in {event.symbol for event in events}:
        price = _places(ticks[symbol]) if ticks[symbol] else _places(prices[symbol])
        qty = _places(steps[symbol]) if steps[symbol] else _places(quantities[symbol])
        out[symbol] = Precision(price, qty)
    return out


def _slices(history: list[ExecEvent], fees: FeeSchedule) -> list[Slice]:
    out: list[Slice] = []
    filled, cost = Decimal(0), Decimal(0)
    for position, event in enumerate(history):
        if event.qty_filled <= filled or event.px_fill is None:
            continue
        qty = event.qty_filled - filled
        total = event.px_fill * event.qty_filled
        px = (total - cost) / qty
        liquidity = MAKER if position > 0 else TAKER
        at_ms = event.ack_ts_ms if event.ack_ts_ms is not None else event.event_ts_ms
        out.append(
            Slice(
                event.client_order_id,
                event.symbol,
                event.side,
                qty,
                px,
                at_ms,
                liquidity,
                px * qty * fees.rate(liquidity),
            )
        )
        filled, cost = event.qty_filled, total
    return out


def build_tca(
    events: Iterable[ExecEvent],
    market: Iterable[MarketSnapshot] = (),
    decisions: Mapping[str, Decision] | None = None,
    fees: FeeSchedule = FeeSchedule(),
) -> Tca:
    """Rows and aggregates from exec-events in any order (each order's events are put in
    sequence order); `decisions` by signal_row_id adds the regime and the instrument grid."""
    every = list(events)
    decisions = decisions or {}
    mids = MidSeries(market)
    history: dict[str, list[ExecEvent]] = defaultdict(list)
    for event in every:
        history[event.client_order_id].append(event)
    precision = precisions(every, decisions)
    rows: list[OrderRow] = []
    all_slices: list[Slice] = []
    gates: dict[str, Counter[str]] = defaultdict(Counter)
    for coid in sorted(history):
        steps = sorted(history[coid], key=lambda e: event_seq(e.event_id))
        first, last = steps[0], steps[-1]
        grid = precision[last.symbol]
        decision = decisions.get(last.signal_row_id)
        slices = _slices(steps, fees)
        all_slices.extend(slices)
        sign = _sign(last.side)
        decision_ts = first.event_ts_ms
        arrival = mids.at(last.symbol, decision_ts)
        px_fill = last.px_fill if last.qty_filled > 0 else None
        fill_ts = slices[-1].ts_ms if slices else None
        markouts: list[Decimal | None] = []
        for horizon in MARKOUT_HORIZONS_S:
            later = mids.at(last.symbol, fill_ts + horizon * 1000, strict=True) if fill_ts is not None else None
            markouts.append(bps(sign * (later - px_fill), px_fill) if later is not None and px_fill else None)
        notional = sum((s.px * s.qty for s in slices), Decimal(0))
        liquidity = {s.liquidity for s in slices}
        if last.status in NOT_SENT:
            minute = str(last.event_ts_ms // 60_000 * 60_000)
            gates[minute][f"{last.status.value}:{last.reason or '-'}"] += 1
        rows.append(
            OrderRow(
                client_order_id=coid,
                signal_row_id=last.signal_row_id,
                symbol=last.symbol,
                side=last.side.value,
                status=last.status.value,
                open=last.status not in TERMINAL_STATUSES,
                regime=decision.regime if decision is not None else "",
                scenario=last.scenario,
                mode=last.mode,
                reason=last.reason,
                qty=last.qty,
                qty_filled=last.qty_filled,
                px_intent=last.px_intent,
                px_fill=grid.px(px_fill, extra=2),
                arrival_mid=grid.px(arrival, extra=1),
                shortfall_bps=bps(sign * (px_fill - arrival), arrival) if px_fill and arrival else None,
                shortfall_intent_bps=(
                    bps(sign * (px_fill - last.px_intent), last.px_intent) if px_fill and last.px_intent else None
                ),
                markout_1s_bps=markouts[0],
                markout_10s_bps=markouts[1],
                markout_60s_bps=markouts[2],
                liquidity=(MAKER if liquidity == {MAKER} else TAKER if liquidity == {TAKER} else "mixed")
                if liquidity
                else None,
                notional=grid.amount(notional),
                fee=grid.amount(sum((s.fee for s in slices), Decimal(0))),
                decision_ts_ms=decision_ts,
                fill_ts_ms=fill_ts,
                time_to_fill_ms=fill_ts - decision_ts if fill_ts is not None else None,
                latency_ms=last.latency_ms,
            )
        )
    return Tca(
        rows=rows,
        slices=all_slices,
        pnl=pnl_over_time(all_slices, mids, precision),
        precision=precision,
        events=len(every),
        has_market=bool(mids),
        fees=fees,
        gates_over_time=dict(sorted(gates.items())),
    )


def pnl_over_time(
    slices: Iterable[Slice], mids: MidSeries, precision: Mapping[str, Precision]
) -> dict[str, list[PnlPoint]]:
    """Average-cost position, realized and unrealized PnL per symbol, one point per fill slice."""
    out: dict[str, list[PnlPoint]] = {}
    ordered = sorted(slices, key=lambda s: (s.symbol, s.ts_ms, s.client_order_id))
    for symbol in sorted({s.symbol for s in ordered}):
        grid = precision[symbol]
        position, avg_cost, realized, fees = Decimal(0), Decimal(0), Decimal(0), Decimal(0)
        points: list[PnlPoint] = []
        for piece in (s for s in ordered if s.symbol == symbol):
            signed = piece.qty * _sign(piece.side)
            fees += piece.fee
            if position == 0 or (position > 0) == (signed > 0):
                avg_cost = (avg_cost * abs(position) + piece.px * piece.qty) / (abs(position) + piece.qty)
                position += signed
            else:
                closing = min(abs(signed), abs(position))
                realized += closing * (piece.px - avg_cost) * (1 if position > 0 else -1)
                position += signed
                if position == 0:
                    avg_cost = Decimal(0)
                elif (position > 0) == (signed > 0):  # flipped through zero: the rest opens anew
                    avg_cost = piece.px
            mark = mids.at(symbol, piece.ts_ms) or piece.px
            points.append(
                PnlPoint(
                    ts_ms=piece.ts_ms,
                    position=grid.quantity(position),
                    avg_cost=grid.px(avg_cost, extra=2) or Decimal(0),
                    realized=grid.amount(realized),
                    unrealized=grid.amount(position * (mark - avg_cost)),
                    fees=grid.amount(fees),
                    value=grid.amount(position * mark),
                )
            )
        out[symbol] = points
    return out


# -- aggregates -----------------------------------------------------------------------------------


def _mean(values: Sequence[Decimal]) -> Decimal | None:
    return (sum(values, Decimal(0)) / len(values)).quantize(BPS_PLACES) if values else None


def _stats(values: Iterable[Decimal | None]) -> dict[str, Decimal | int | None]:
    present = sorted(v for v in values if v is not None)
    return {
        "n": len(present),
        "mean": _mean(present),
        "p50": percentile(present, 0.5),
        "p95": percentile(present, 0.95),
    }


def group_stats(rows: Sequence[OrderRow], key: str) -> dict[str, dict[str, Any]]:
    """Fill rate, time to fill, shortfall and markouts per value of `key` (symbol/regime/scenario)."""
    groups: dict[str, list[OrderRow]] = defaultdict(list)
    for row in rows:
        groups[str(getattr(row, key)) or "(unknown)"].append(row)
    out: dict[str, dict[str, Any]] = {}
    for name, members in sorted(groups.items()):
        sent = [r for r in members if r.status not in NOT_SENT]
        filled = [r for r in sent if r.qty_filled > 0]
        ordered_qty = sum((r.qty for r in sent), Decimal(0))
        filled_qty = sum((r.qty_filled for r in sent), Decimal(0))
        times = sorted(r.time_to_fill_ms for r in filled if r.time_to_fill_ms is not None)
        out[name] = {
            "orders": len(members),
            "sent": len(sent),
            "filled": len(filled),
            "open": sum(1 for r in members if r.open),
            "fill_rate": (Decimal(len(filled)) / len(sent)).quantize(Decimal("0.0001")) if sent else None,
            "qty_fill_rate": (filled_qty / ordered_qty).quantize(Decimal("0.0001")) if ordered_qty else None,
            "time_to_fill_ms_p50": percentile(times, 0.5),
            "time_to_fill_ms_p95": percentile(times, 0.95),
            "shortfall_bps": _stats(r.shortfall_bps for r in filled),
            "markout_1s_bps": _stats(r.markout_1s_bps for r in filled),
            "markout_10s_bps": _stats(r.markout_10s_bps for r in filled),
            "markout_60s_bps": _stats(r.markout_60s_bps for r in filled),
        }
    return out


def fees_by_symbol(tca: Tca) -> dict[str, dict[str, Decimal]]:
    out: dict[str, dict[str, Decimal]] = {}
    for piece in tca.slices:
        grid = tca.precision[piece.symbol]
        entry = out.setdefault(piece.symbol, {MAKER: Decimal(0), TAKER: Decimal(0)})
        entry[piece.liquidity] = grid.amount(entry[piece.liquidity] + piece.fee)
    return dict(sorted(out.items()))


def jsonable(value: Any) -> Any:
    """Decimals as strings (exact), containers recursively."""
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def headline(rows: Sequence[OrderRow]) -> dict[str, int]:
    open_orders = sum(1 for r in rows if r.open)
    return {"orders": len(rows), "final": len(rows) - open_orders, "open": open_orders}


def summary_json(tca: Tca, metadata: Mapping[str, Any]) -> dict[str, Any]:
    by_status = Counter(r.status for r in tca.rows)
    by_reason = Counter(f"{r.status}:{r.reason}" for r in tca.rows if r.reason)
    out: dict[str, Any] = jsonable(
        {
            "metadata": dict(metadata),
            "events": tca.events,
            **headline(tca.rows),
            "by_status": dict(sorted(by_status.items())),
            "by_reason": dict(sorted(by_reason.items())),
            "has_market": tca.has_market,
            "fee_schedule_bps": {MAKER: tca.fees.maker_bps, TAKER: tca.fees.taker_bps},
            "by_symbol": group_stats(tca.rows, "symbol"),
            "by_regime": group_stats(tca.rows, "regime"),
            "by_scenario": group_stats(tca.rows, "scenario"),
            "fees": fees_by_symbol(tca),
            "positions": {
                symbol: {
                    "position": points[-1].position,
                    "avg_cost": points[-1].avg_cost,
                    "realized": points[-1].realized,
                    "unrealized": points[-1].unrealized,
                    "fees": points[-1].fees,
                    "pnl": points[-1].pnl,
                }
                for symbol, points in tca.pnl.items()
                if points
            },
            "denies_throttles_per_minute": {k: dict(sorted(v.items())) for k, v in tca.gates_over_time.items()},
            "latency_ms": _stats(Decimal(r.latency_ms) for r in tca.rows if r.latency_ms is not None),
        }
    )
    return out
