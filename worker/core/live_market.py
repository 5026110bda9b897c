"""A market view that grows as snapshots arrive: the live worker's `market.v1`, for a backtest
executor that runs beside a venue (the shadow, `execworker run --shadow backtest:MODEL`).

It answers `quote_at` like `MarketView` (the latest snapshot at or before a time). Snapshots may
arrive a little out of event-time order (several partitions): each is inserted at its place.
Only the last `keep` snapshots per symbol are kept, so a long run does not grow without bound.
Trade direction is not derived (0, unknown): the tick rule needs the whole trade sequence, and
only resting fills in a replay use it (`fills_until`), which a live shadow does not call.
"""

from __future__ import annotations

import bisect

from worker.contract.messages import MarketSnapshot
from worker.core.fills import Quote
from worker.core.market import MarketView

# Per symbol: at 10 snapshots/s, the last ~15 minutes of market time.
DEFAULT_KEEP = 10_000


class LiveMarketView(MarketView):
    def __init__(self, keep: int = DEFAULT_KEEP) -> None:
        super().__init__()
        self._keep = keep

    def add(self, snapshot: MarketSnapshot) -> None:
        times = self._times.setdefault(snapshot.symbol, [])
        quotes = self._quotes.setdefault(snapshot.symbol, [])
        quote = Quote.of(snapshot)
        at = bisect.bisect_right(times, snapshot.event_time_ms)
        times.insert(at, snapshot.event_time_ms)
        quotes.insert(at, quote)
        if len(times) > 2 * self._keep:
            del times[: -self._keep]
            del quotes[: -self._keep]
