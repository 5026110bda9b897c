"""Live versus replay, per order: what the venue did against what the backtest would have done,
each difference attributed to one cause.

Join: by `client_order_id` (both sides derive it from the same decision and rounding). An order
found on one side only is then paired with the other side's one-sided order of the same
`signal_row_id`, if there is exactly one each: the id differs only because the rounded
quantity or price differed (the id hashes them), so that pair is one row with cause `rounding`.
What is left is `live_only` or `replay_only`.

Each row gets exactly one cause, the first of these rules that holds (the precedence order,
also the order of `CAUSES`):

1. `live_only` / `replay_only`: the order exists on one side only.
2. `rounding`: the order sent differs: another client_order_id for the same decision (above),
   or the same id with a different `qty`, or a different `px_sent` where both sides sent one
   (an order never sent has none).
3. `gate_or_mode`: a local gate or mode decided differently: DENIED or THROTTLED on one side
   only, or on both with another status or reason, or another `mode` or `scenario` in force.
4. `venue_reject`: the live venue REJECTED the order and the backtest did not (or with another
   reason).
5. `latency`: the outcomes are the same but the latencies differ by more than
   `latency_tolerance_ms`; or the outcomes differ (see 6) and market data shows that each side's
   arrival time (decision time + its latency) explains it: both filled and the mid moved between
   the two arrivals in the direction of the price difference by at least half of it; or a LIMIT
   filled at once on one side only and the touch reached its price at that side's arrival and
   not at the other's.
6. `fill_model`: the outcomes differ: final status, filled quantity, or fill price by more than
   `price_tolerance_bps` (includes a backtest REJECTED for want of a price, and a LIMIT that
   rested on one side and filled on the other).
7. `match`: same outcome, latencies within tolerance.

`px_diff_bps = sign * (live px_fill - replay px_fill) / replay px_fill * 10,000` (sign +1 BUY,
-1 SELL): positive = the venue's fill was worse for us than the backtest's. `latency_diff_ms` =
live latency - replay latency (each the first `latency_ms` of the order: its acknowledgement).
"""

from __future__ import annotations

import csv
import io
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from worker.contract.enums import OrderStatus, Side
from worker.contract.events import ExecEvent
from worker.contract.messages import Decision, MarketSnapshot
from worker.core.fills import Quote
from worker.core.market import MarketView
from worker.policy.ids import event_seq
from worker.runtime.summary import percentile

CAUSES = ("live_only", "replay_only", "rounding", "gate_or_mode", "venue_reject", "latency", "fill_model", "match")
NOT_SENT = frozenset({OrderStatus.DENIED, OrderStatus.THROTTLED})
# Events that record a request about to be sent, not an answer.
INTENTS = frozenset({OrderStatus.PENDING_NEW, OrderStatus.SUBMITTED, OrderStatus.PENDING_CANCEL})
_BPS = Decimal(10_000)
_PLACES = Decimal("0.01")

COLUMNS = (
    "client_order_id",
    "signal_row_id",
    "symbol",
    "side",
    "regime",
    "cause",
    "detail",
    "live_status",
    "replay_status",
    "live_reason",
    "replay_reason",
    "live_qty_filled",
    "replay_qty_filled",
    "live_px_fill",
    "replay_px_fill",
    "px_diff_bps",
    "live_latency_ms",
    "replay_latency_ms",
    "latency_diff_ms",
)


@dataclass(frozen=True, slots=True)
class Outcome:
    """One side's view of one order: its final state and its first acknowledgement."""

    client_order_id: str
    signal_row_id: str
    symbol: str
    side: Side
    status: OrderStatus
    reason: str | None
    mode: str
    scenario: str
    qty: Decimal
    px_intent: Decimal | None
    px_sent: Decimal | None
    qty_filled: Decimal
    px_fill: Decimal | None  # None unless something filled
    latency_ms: int | None
    decision_ts_ms: int
    taker: bool  # the first answer already carried a fill (it did not rest)


def outcomes(events: Iterable[ExecEvent]) -> dict[str, Outcome]:
    """Each order's outcome from its exec-events, in any order."""
    history: dict[str, list[ExecEvent]] = defaultdict(list)
    for event in events:
        history[event.client_order_id].append(event)
    out: dict[str, Outcome] = {}
    for coid, steps in history.items():
        steps.sort(key=lambda e: event_seq(e.event_id))
        first, last = steps[0], steps[-1]
        answer = next((e for e in steps if e.status not in INTENTS), None)
        latency = next((e.latency_ms for e in steps if e.latency_ms is not None), None)
        px_sent = next((e.px_sent for e in reversed(steps) if e.px_sent is not None), None)
        out[coid] = Outcome(
            client_order_id=coid,
            signal_row_id=last.signal_row_id,
            symbol=last.symbol,
            side=last.side,
            status=last.status,
            reason=last.reason,
            mode=last.mode,
            scenario=last.scenario,
            qty=last.qty,
            px_intent=last.px_intent,
            px_sent=px_sent,
            qty_filled=last.qty_filled,
            px_fill=last.px_fill if last.qty_filled > 0 else None,
            latency_ms=latency,
            decision_ts_ms=first.event_ts_ms,
            taker=answer is not None and answer.qty_filled > 0,
        )
    return out


@dataclass(frozen=True, slots=True)
class DiffRow:
    client_order_id: str
    signal_row_id: str
    symbol: str
    side: str
    regime: str
    cause: str
    detail: str
    live: Outcome | None
    replay: Outcome | None
    px_diff_bps: Decimal | None
    latency_diff_ms: int | None

    def as_dict(self) -> dict[str, Any]:
        live, replay = self.live, self.replay
        return {
            "client_order_id": self.client_order_id,
            "signal_row_id": self.signal_row_id,
            "symbol": self.symbol,
            "side": self.side,
            "regime": self.regime,
            "cause": self.cause,
            "detail": self.detail,
            "live_status": live.status.value if live else None,
            "replay_status": replay.status.value if replay else None,
            "live_reason": live.reason if live else None,
            "replay_reason": replay.reason if replay else None,
            "live_qty_filled": live.qty_filled if live else None,
            "replay_qty_filled": replay.qty_filled if replay else None,
            "live_px_fill": live.px_fill if live else None,
            "replay_px_fill": replay.px_fill if replay else None,
            "px_diff_bps": self.px_diff_bps,
            "live_latency_ms": live.latency_ms if live else None,
            "replay_latency_ms": replay.latency_ms if replay else None,
            "latency_diff_ms": self.latency_diff_ms,
        }


@dataclass(frozen=True, slots=True)
class DiffConfig:
    price_tolerance_bps: Decimal = Decimal(0)
    latency_tolerance_ms: int = 50


def _sign(side: Side) -> Decimal:
    return Decimal(1) if side is Side.BUY else Decimal(-1)


def _bps(numerator: Decimal, denominator: Decimal) -> Decimal:
    value = (numerator / denominator * _BPS).quantize(_PLACES, rounding=ROUND_HALF_EVEN)
    return value.copy_abs() if value == 0 else value  # never "-0.00"


def px_diff_bps(live: Outcome, replay: Outcome) -> Decimal | None:
    if live.px_fill is None or replay.px_fill is None:
        return None
    return _bps(_sign(live.side) * (live.px_fill - replay.px_fill), replay.px_fill)


def _same_outcome(live: Outcome, replay: Outcome, config: DiffConfig) -> bool:
    if live.status is not replay.status or live.qty_filled != replay.qty_filled:
        return False
    if live.px_fill is None or replay.px_fill is None or live.px_fill == replay.px_fill:
        return True
    # Unrounded: two prices a tick apart are never "0.00 bps" the same at tolerance 0.
    return abs(live.px_fill - replay.px_fill) / replay.px_fill * _BPS <= config.price_tolerance_bps


def _arrival(order: Outcome, market: MarketView) -> Quote | None:
    """The market an order met: at its decision time plus its latency (its acknowledgement)."""
    if order.latency_ms is None:
        return None
    return market.quote_at(order.symbol, order.decision_ts_ms + order.latency_ms)


def _market_move_bps(live: Outcome, replay: Outcome, market: MarketView) -> Decimal | None:
    """How far the mid moved against us between the replay's and the live arrival."""
    at_live, at_replay = _arrival(live, market), _arrival(replay, market)
    if at_live is None or at_replay is None:
        return None
    mid_live, mid_replay = (at_live.bid + at_live.ask) / 2, (at_replay.bid + at_replay.ask) / 2
    return _bps(_sign(live.side) * (mid_live - mid_replay), mid_replay)


def _reaches(order: Outcome, quote: Quote) -> bool:
    """A LIMIT's price is reached by the touch (ask for a BUY, bid for a SELL)."""
    assert order.px_sent is not None
    return quote.ask <= order.px_sent if order.side is Side.BUY else quote.bid >= order.px_sent


def _latency_explains(live: Outcome, replay: Outcome, market: MarketView | None, diff: Decimal | None) -> str | None:
    """Why the two arrival times explain the different outcomes, or None (rule 5)."""
    if market is None:
        return None
    if diff is not None and diff != 0:
        move = _market_move_bps(live, replay, market)
        if move is not None and move * diff > 0 and abs(move) * 2 >= abs(diff):
            return f"market moved {move} bps between the arrivals"
        return None
    if live.taker != replay.taker and live.px_sent is not None:
        at_live, at_replay = _arrival(live, market), _arrival(replay, market)
        if at_live is None or at_replay is None:
            return None
        if _reaches(live, at_live) == live.taker and _reaches(replay, at_replay) == replay.taker:
            return "the limit was reached at one arrival only"
    return None


def attribute(
    live: Outcome | None,
    replay: Outcome | None,
    market: MarketView | None = None,
    config: DiffConfig = DiffConfig(),
) -> tuple[str, str]:
    """(cause, detail) of one joined order, by the precedence order of the module's rules."""
    if live is None or replay is None:
        return ("replay_only", "no live order") if live is None else ("live_only", "not in the replay")
    if live.client_order_id != replay.client_order_id:
        return "rounding", (
            f"rounded differently: live qty {live.qty} px {live.px_sent}, replay qty {replay.qty} px {replay.px_sent}"
        )
    # An order never sent (DENIED, THROTTLED) has no px_sent: only prices both sides sent compare.
    sent_both = live.px_sent is not None and replay.px_sent is not None
    if live.qty != replay.qty or (sent_both and live.px_sent != replay.px_sent):
        return "rounding", f"sent qty/px: live {live.qty}/{live.px_sent}, replay {replay.qty}/{replay.px_sent}"
    live_gated, replay_gated = live.status in NOT_SENT, replay.status in NOT_SENT
    if live_gated != replay_gated or (live_gated and (live.status, live.reason) != (replay.status, replay.reason)):
        return "gate_or_mode", (
            f"live {live.status.value}:{live.reason or '-'}, replay {replay.status.value}:{replay.reason or '-'}"
        )
    if (live.mode, live.scenario) != (replay.mode, replay.scenario):
        return "gate_or_mode", (
            f"mode/scenario: live {live.mode}/{live.scenario}, replay {replay.mode}/{replay.scenario}"
        )
    if live.status is OrderStatus.REJECTED and (replay.status, replay.reason) != (live.status, live.reason):
        return "venue_reject", f"{live.reason or 'rejected'}; replay {replay.status.value}:{replay.reason or '-'}"
    diff = px_diff_bps(live, replay)
    latency = _latency_diff(live, replay)
    if _same_outcome(live, replay, config):
        if latency is not None and abs(latency) > config.latency_tolerance_ms:
            return "latency", f"same outcome, latency {latency:+d} ms"
        return "match", ""
    explained = _latency_explains(live, replay, market, diff)
    if explained is not None:
        return "latency", f"{explained} ({latency or 0:+d} ms)"
    if live.status is not replay.status:
        return "fill_model", f"live {live.status.value}, replay {replay.status.value}:{replay.reason or '-'}"
    if live.qty_filled != replay.qty_filled:
        return "fill_model", f"filled qty: live {live.qty_filled}, replay {replay.qty_filled}"
    return "fill_model", f"fill price {diff} bps ({live.px_fill} vs {replay.px_fill})"


def _latency_diff(live: Outcome, replay: Outcome) -> int | None:
    if live.latency_ms is None or replay.latency_ms is None:
        return None
    return live.latency_ms - replay.latency_ms


def join(live: Mapping[str, Outcome], replay: Mapping[str, Outcome]) -> list[tuple[Outcome | None, Outcome | None]]:
    """Pairs by client_order_id, then one-sided leftovers by signal_row_id (one each only)."""
    pairs: list[tuple[Outcome | None, Outcome | None]] = [(live[c], replay[c]) for c in live.keys() & replay.keys()]
    live_left: dict[str, list[Outcome]] = defaultdict(list)
    replay_left: dict[str, list[Outcome]] = defaultdict(list)
    for coid in live.keys() - replay.keys():
        live_left[live[coid].signal_row_id].append(live[coid])
    for coid in replay.keys() - live.keys():
        replay_left[replay[coid].signal_row_id].append(replay[coid])
    for row_id in sorted(live_left.keys() | replay_left.keys()):
        lives, replays = live_left.get(row_id, []), replay_left.get(row_id, [])
        if len(lives) == 1 and len(replays) == 1:
            pairs.append((lives[0], replays[0]))
            continue
        pairs.extend((one, None) for one in lives)
        pairs.extend((None, one) for one in replays)
    return pairs


def diff_orders(
    live_events: Iterable[ExecEvent],
    replay_events: Iterable[ExecEvent],
    market: Iterable[MarketSnapshot] = (),
    decisions: Mapping[str, Decision] | None = None,
    config: DiffConfig = DiffConfig(),
) -> list[DiffRow]:
    """One row per order of either side, sorted by client_order_id (the live one when paired)."""
    decisions = decisions or {}
    snapshots = list(market)
    view = MarketView.from_snapshots(snapshots) if snapshots else None
    rows: list[DiffRow] = []
    for live, replay in join(outcomes(live_events), outcomes(replay_events)):
        one = live or replay
        assert one is not None
        cause, detail = attribute(live, replay, view, config)
        decision = decisions.get(one.signal_row_id)
        rows.append(
            DiffRow(
                client_order_id=one.client_order_id,
                signal_row_id=one.signal_row_id,
                symbol=one.symbol,
                side=one.side.value,
                regime=decision.regime if decision is not None else "",
                cause=cause,
                detail=detail,
                live=live,
                replay=replay,
                px_diff_bps=px_diff_bps(live, replay) if live is not None and replay is not None else None,
                latency_diff_ms=_latency_diff(live, replay) if live is not None and replay is not None else None,
            )
        )
    rows.sort(key=lambda row: (row.client_order_id, row.replay.client_order_id if row.replay else ""))
    return rows


def _stats(values: Sequence[Decimal]) -> dict[str, Any]:
    ordered = sorted(values)
    mean = (sum(ordered, Decimal(0)) / len(ordered)).quantize(_PLACES, rounding=ROUND_HALF_EVEN) if ordered else None
    return {"n": len(ordered), "mean": mean, "p50": percentile(ordered, 0.5), "p95": percentile(ordered, 0.95)}


def summarize(rows: Sequence[DiffRow]) -> dict[str, Any]:
    """Counts per cause (every cause, precedence order), per regime and cause, and the price and
    latency differences of the orders on both sides."""
    causes = Counter(row.cause for row in rows)
    by_regime: dict[str, Counter[str]] = defaultdict(Counter)
    for row in rows:
        by_regime[row.regime or "-"][row.cause] += 1
    price = [row.px_diff_bps for row in rows if row.px_diff_bps is not None]
    taker = [row.px_diff_bps for row in rows if row.px_diff_bps is not None and row.live and row.live.taker]
    rested = [row.px_diff_bps for row in rows if row.px_diff_bps is not None and row.live and not row.live.taker]
    latency = [Decimal(row.latency_diff_ms) for row in rows if row.latency_diff_ms is not None]
    return {
        "orders": len(rows),
        "both_sides": sum(1 for row in rows if row.live is not None and row.replay is not None),
        "by_cause": {cause: causes.get(cause, 0) for cause in CAUSES},
        "by_regime": {regime: dict(sorted(counts.items())) for regime, counts in sorted(by_regime.items())},
        "px_diff_bps": _stats(price),
        "px_diff_bps_live_taker": _stats(taker),
        "px_diff_bps_live_rested": _stats(rested),
        "latency_diff_ms": _stats(latency),
    }


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def to_json(rows: Sequence[DiffRow], summary: Mapping[str, Any]) -> dict[str, Any]:
    """Decimals as strings: exact, and the same bytes every time."""
    return {"summary": _plain(dict(summary)), "orders": [_plain(row.as_dict()) for row in rows]}


def to_csv(rows: Sequence[DiffRow]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in rows:
        values = _plain(row.as_dict())
        writer.writerow(["" if values[c] is None else values[c] for c in COLUMNS])
    return out.getvalue()


_TEXT_COLUMNS = (  # (field, header, width)
    ("client_order_id", "client_order_id", 34),
    ("symbol", "symbol", 8),
    ("side", "side", 4),
    ("cause", "cause", 12),
    ("live_status", "live", 16),
    ("replay_status", "replay", 16),
    ("live_px_fill", "live_px", 12),
    ("replay_px_fill", "replay_px", 12),
    ("px_diff_bps", "diff_bps", 9),
    ("latency_diff_ms", "dlat_ms", 7),
)


def text_table(rows: Sequence[DiffRow]) -> list[str]:
    """Fixed-width columns; `diff_bps` = px_diff_bps, `dlat_ms` = latency_diff_ms."""
    head = " ".join(header.ljust(width) for _, header, width in _TEXT_COLUMNS) + " detail"
    lines = [head]
    for row in rows:
        values = _plain(row.as_dict())
        cells = ("-" if values[name] is None else str(values[name]) for name, _, _ in _TEXT_COLUMNS)
        widths = (width for _, _, width in _TEXT_COLUMNS)
        lines.append(" ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " " + row.detail)
    return lines


STATS = (
    ("px_diff_bps", "bps, live vs replay fill, + = live worse"),
    ("px_diff_bps_live_taker", "the same, live filled at once"),
    ("px_diff_bps_live_rested", "the same, live rested first"),
    ("latency_diff_ms", "ms, live - replay"),
)


def text_summary(summary: Mapping[str, Any]) -> list[str]:
    lines = [f"orders {summary['orders']} ({summary['both_sides']} on both sides); by cause (precedence order):"]
    lines.extend(f"  {cause:<13} {count}" for cause, count in summary["by_cause"].items())
    for key, unit in STATS:
        stats = _plain(summary[key])
        lines.append(
            f"{key:<24} n {stats['n']:<5} mean {stats['mean'] or '-':<8} p50 {stats['p50'] or '-':<8} "
            f"p95 {stats['p95'] or '-':<8} ({unit})"
        )
    return lines
