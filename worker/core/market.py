"""Market time for backtests: snapshots ordered by `event_time_ms`, looked up as of an order's
event time, and trade direction by the tick rule.

Tick rule (as upstream's CVD): a trade above the previous price is a buy, below is a sell; at an
unchanged price the previous direction carries over, but only for at most `max_carry` trades in a
row and `max_carry_ms` since the last price change; beyond either cap the direction is unknown
(0). The caps stop one old uptick from labelling a long flat stretch as buying.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal

from worker.contract.messages import MarketSnapshot
from worker.core.fills import Quote

# Upstream's defaults: carry a direction across at most 50 unchanged prices or 5 seconds.
DEFAULT_MAX_CARRY = 50
DEFAULT_MAX_CARRY_MS = 5_000


def tick_rule(
    trades: Iterable[tuple[int, Decimal]],
    max_carry: int = DEFAULT_MAX_CARRY,
    max_carry_ms: int = DEFAULT_MAX_CARRY_MS,
) -> list[int]:
    """Direction (+1 buy, -1 sell, 0 unknown) of each (event_time_ms, price), in time order."""
    directions: list[int] = []
    previous: Decimal | None = None
    direction, carried, changed_at = 0, 0, 0
    for at_ms, price in trades:
        if previous is None or price == previous:
            carried += 1
            stale = previous is None or carried > max_carry or at_ms - changed_at > max_carry_ms
            directions.append(0 if stale else direction)
        else:
            direction = 1 if price > previous else -1
            carried, changed_at = 0, at_ms
            directions.append(direction)
        previous = price
    return directions


@dataclass
class MarketView:
    """Snapshots per symbol in event-time order; `quote_at` answers "what was the market then".

    Each snapshot's last trade (`last_px`) gets its aggressor side by the tick rule over that
    symbol's trades in event-time order, with the given caps.
    """

    _times: dict[str, list[int]] = field(default_factory=dict)
    _quotes: dict[str, list[Quote]] = field(default_factory=dict)
    # Every snapshot's (time, symbol) in time order: which symbols moved in a window of time.
    _timeline: list[tuple[int, str]] = field(default_factory=list)

    @classmethod
    def from_snapshots(
        cls,
        snapshots: Iterable[MarketSnapshot],
        max_carry: int = DEFAULT_MAX_CARRY,
        max_carry_ms: int = DEFAULT_MAX_CARRY_MS,
    ) -> MarketView:
        view = cls()
        by_symbol: dict[str, list[MarketSnapshot]] = {}
        # Market time: sort by event time (then arrival order, which sorted() keeps for ties).
        for snap in sorted(snapshots, key=lambda s: s.event_time_ms):
            by_symbol.setdefault(snap.symbol, []).append(snap)
        view._timeline = sorted((s.event_time_ms, s.symbol) for snaps in by_symbol.values() for s in snaps)
        for symbol, snaps in sorted(by_symbol.items()):
            trades = [(s.event_time_ms, s.last_px) for s in snaps if s.last_px is not None]
            directions = iter(tick_rule(trades, max_carry, max_carry_ms))
            view._times[symbol] = [s.event_time_ms for s in snaps]
            view._quotes[symbol] = [
                Quote.of(snap, next(directions) if snap.last_px is not None else 0) for snap in snaps
            ]
        return view

    def quote_at(self, symbol: str, at_ms: int) -> Quote | None:
        """The latest snapshot at or before `at_ms` (None before the first one)."""
        times = self._times.get(symbol)
        if not times:
            return None
        index = bisect.bisect_right(times, at_ms) - 1
        return self._quotes[symbol][index] if index >= 0 else None

    def quotes_between(self, symbol: str, after_ms: int, until_ms: int | None) -> list[Quote]:
        """Snapshots with `after_ms < event_time_ms <= until_ms` (to the end when None), in time order."""
        times = self._times.get(symbol)
        if not times:
            return []
        first = bisect.bisect_right(times, after_ms)
        last = len(times) if until_ms is None else bisect.bisect_right(times, until_ms)
        return self._quotes[symbol][first:last]

    def symbols_between(self, after_ms: int, until_ms: int) -> set[str]:
        """The symbols with a snapshot in `after_ms < event_time_ms <= until_ms`."""
        # (t, "") sorts before every (t, symbol) and (t, "\uffff") after: bisect on time alone.
        first = bisect.bisect_right(self._timeline, (after_ms, "\uffff"))
        last = bisect.bisect_right(self._timeline, (until_ms, "\uffff"))
        return {symbol for _, symbol in self._timeline[first:last]}
