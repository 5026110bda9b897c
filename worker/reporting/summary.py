"""What a set of exec-events says: outcomes, reasons, fills, slippage and latency distributions.

Quantiles are nearest-rank over Decimal values (slippage) and integers (latency), so the same
events always give the same report. Only the HTML plots convert to float, for drawing.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from worker.contract.events import ExecEvent
from worker.policy.ids import event_seq
from worker.runtime.summary import percentile

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95, 0.99)


@dataclass
class Report:
    events: int = 0
    orders: int = 0
    by_status: Counter[str] = field(default_factory=Counter)
    by_reason: Counter[str] = field(default_factory=Counter)
    fills_by_symbol: Counter[str] = field(default_factory=Counter)
    notional_by_symbol: dict[str, Decimal] = field(default_factory=dict)
    slippage_bps: list[Decimal] = field(default_factory=list)
    latency_ms: list[int] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        slippage = sorted(self.slippage_bps)
        latency = sorted(self.latency_ms)
        mean = sum(slippage, Decimal(0)) / len(slippage) if slippage else None
        return {
            "events": self.events,
            "orders": self.orders,
            "by_status": dict(sorted(self.by_status.items())),
            "by_reason": dict(sorted(self.by_reason.items())),
            "fills": {
                symbol: {"count": count, "notional": format(self.notional_by_symbol[symbol], "f")}
                for symbol, count in sorted(self.fills_by_symbol.items())
            },
            "slippage_bps": {
                "count": len(slippage),
                "mean": format(mean.quantize(Decimal("0.0001")), "f") if mean is not None else None,
                **{f"p{int(q * 100)}": _fmt(percentile(slippage, q)) for q in QUANTILES},
            },
            "latency_ms": {
                "count": len(latency),
                **{f"p{int(q * 100)}": percentile(latency, q) for q in QUANTILES},
            },
        }


def _fmt(value: Decimal | None) -> str | None:
    return None if value is None else format(value, "f")


def latest_by_order(events: Iterable[ExecEvent]) -> dict[str, ExecEvent]:
    """Each order's latest state: its event with the highest sequence number, in any input order."""
    latest: dict[str, ExecEvent] = {}
    for event in events:
        known = latest.get(event.client_order_id)
        if known is None or event_seq(event.event_id) > event_seq(known.event_id):
            latest[event.client_order_id] = event
    return latest


def build_report(events: Iterable[ExecEvent]) -> Report:
    """One row per order, from its latest event: terminal orders by outcome, and orders still
    open (a resting ACCEPTED or PARTIALLY_FILLED) as such."""
    report = Report()
    every = list(events)
    report.events = len(every)
    latest = latest_by_order(every)
    report.orders = len(latest)
    for event in latest.values():
        report.by_status[event.status.value] += 1
        if event.reason:
            report.by_reason[f"{event.status.value}:{event.reason}"] += 1
        if event.qty_filled > 0 and event.px_fill is not None:
            # Partial fills count too (an IOC remainder that expired, a resting order still open).
            report.fills_by_symbol[event.symbol] += 1
            notional = event.px_fill * event.qty_filled
            report.notional_by_symbol[event.symbol] = report.notional_by_symbol.get(event.symbol, Decimal(0)) + notional
            if event.slippage_bps is not None:
                report.slippage_bps.append(event.slippage_bps)
        if event.latency_ms is not None:
            report.latency_ms.append(event.latency_ms)
    return report
