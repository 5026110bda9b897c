"""Time as an injected dependency: sim-time for replays and backtests, wall-clock for live."""

from __future__ import annotations

import time
from typing import Protocol


class TimeProvider(Protocol):
    def now_ms(self) -> int:
        """Current time in integer milliseconds since the epoch (UTC)."""
        ...


class SimClock:
    """Time that moves only when an event says so: `advance_to(event_ts_ms)` never goes back.

    Replays and backtests read the time from the data, so the same input gives the same output
    whenever and however fast it is replayed.
    """

    def __init__(self, start_ms: int = 0) -> None:
        self._now_ms = start_ms

    def advance_to(self, ts_ms: int) -> None:
        # Monotone: an out-of-order event does not move the clock back.
        if ts_ms > self._now_ms:
            self._now_ms = ts_ms

    def now_ms(self) -> int:
        return self._now_ms


class WallClock:
    """Real time, for live trading only. Never used by anything a replay depends on."""

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000
