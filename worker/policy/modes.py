"""Strategy modes: which scenario parameters apply now, from a schedule and from the market.

Rule (documented in docs/operations.md): a market trigger that is active wins; otherwise the
first schedule window containing the local time wins; otherwise the default mode. A mode set
explicitly (from `strategy-mode.v1`) overrides both until it is cleared.

Schedule windows are local wall-clock times in ONE configured IANA timezone. A window whose end
is not after its start wraps midnight (22:00-02:00 is 22:00..24:00 plus 00:00..02:00, the latter
belonging to the previous day's window for weekday filters). On DST change days the wall clock
is what counts: on a spring-forward day a window inside the skipped hour never matches; on a
fall-back day the repeated hour matches twice. Market triggers use hysteresis: active at or
above `on_at`, inactive at or below `off_at`, unchanged in between.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo


@dataclass(frozen=True)
class ScenarioParams:
    z_threshold: Decimal  # |score| at or above which a signal becomes an order
    take_profit_bps: Decimal
    stop_loss_bps: Decimal
    cost_bps: Decimal
    order_qty: Decimal
    per_symbol_orders_per_s: float
    global_orders_per_s: float
    min_consistency: float = 0.5


@dataclass(frozen=True)
class Window:
    start: time
    end: time
    weekdays: frozenset[int] = frozenset(range(7))  # Monday = 0, of the day the window starts

    def contains(self, local: datetime) -> bool:
        moment = local.time().replace(tzinfo=None)
        if self.start < self.end:
            return local.weekday() in self.weekdays and self.start <= moment < self.end
        # Wraps midnight: the late part belongs to today, the early part to yesterday's window.
        if moment >= self.start:
            return local.weekday() in self.weekdays
        if moment < self.end:
            return (local - timedelta(days=1)).weekday() in self.weekdays
        return False


@dataclass(frozen=True)
class MarketTrigger:
    mode: str
    on_at: float
    off_at: float

    def __post_init__(self) -> None:
        if not self.off_at < self.on_at:
            raise ValueError(f"market trigger for {self.mode}: off_at must be below on_at (hysteresis)")


@dataclass(frozen=True)
class ModeSwitch:
    """Audit record of a mode change."""

    old: str
    new: str
    trigger: str  # "schedule", "market", "explicit", "default"
    at_ms: int


@dataclass
class ModeManager:
    timezone: ZoneInfo
    modes: dict[str, ScenarioParams]
    default: str
    schedule: list[tuple[Window, str]] = field(default_factory=list)
    market: MarketTrigger | None = None
    current: str = ""
    explicit: str | None = None
    _market_active: bool = False

    def __post_init__(self) -> None:
        unknown = {m for _, m in self.schedule} | {self.default} | ({self.market.mode} if self.market else set())
        missing = unknown - set(self.modes)
        if missing:
            raise ValueError(f"modes used but not defined: {', '.join(sorted(missing))}")
        if not self.current:
            self.current = self.default

    @property
    def params(self) -> ScenarioParams:
        return self.modes[self.current]

    def set_explicit(self, mode: str | None) -> None:
        if mode is not None and mode not in self.modes:
            raise ValueError(f"unknown mode {mode!r}")
        self.explicit = mode

    def evaluate(self, now_ms: int, activity: float | None = None) -> ModeSwitch | None:
        """The mode at `now_ms` (sim-time in replays); a ModeSwitch when it changed."""
        if self.market is not None and activity is not None:
            if activity >= self.market.on_at:
                self._market_active = True
            elif activity <= self.market.off_at:
                self._market_active = False
        mode, trigger = self._choose(now_ms)
        if mode == self.current:
            return None
        switch = ModeSwitch(self.current, mode, trigger, now_ms)
        self.current = mode
        return switch

    def _choose(self, now_ms: int) -> tuple[str, str]:
        if self.explicit is not None:
            return self.explicit, "explicit"
        if self._market_active and self.market is not None:
            return self.market.mode, "market"
        local = datetime.fromtimestamp(now_ms / 1000, tz=self.timezone)
        for window, mode in self.schedule:
            if window.contains(local):
                return mode, "schedule"
        return self.default, "default"
