"""Time as an injected dependency.

Sim-time needs no object: in replays and backtests the time of a command is its own
`event_ts_ms`, passed explicitly to whatever needs it (the backtest executor, the modes, the
rate wall). That makes a result a function of the command alone, whatever else was processed
before it and however the input was partitioned. Live code that needs "now" takes a
`TimeProvider`; `WallClock` is the only one, and nothing a replay runs ever receives it.
"""

from __future__ import annotations

import time
from typing import Protocol


class TimeProvider(Protocol):
    def now_ms(self) -> int:
        """Current time in integer milliseconds since the epoch (UTC)."""
        ...


class WallClock:
    """Real time, for live trading only. Never used by anything a replay depends on."""

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000
