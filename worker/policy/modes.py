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
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from worker.policy.rules import RulesConfig, RulesConfigError, parse_rules


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
class SymbolFilters:
    """The venue's grid for a symbol."""

    tick_size: Decimal
    step_size: Decimal
    min_notional: Decimal


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
    symbol: str = ""  # set when modes are tracked per symbol


@dataclass
class ModeManager:
    timezone: ZoneInfo
    modes: dict[str, ScenarioParams]
    default: str
    schedule: list[tuple[Window, str]] = field(default_factory=list)
    market: MarketTrigger | None = None
    current: str = ""
    explicit: str | None = None
    # Venue grid per symbol (tick, step, min notional), for sizing signals; from the modes file.
    symbol_filters: dict[str, SymbolFilters] = field(default_factory=dict)
    # Rollout state of each pass-through rule (enforce/observe/off), per mode and symbol.
    rules: RulesConfig = field(default_factory=RulesConfig)
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

    def observe_activity(self, activity: float) -> None:
        """Feeds the market trigger (hysteresis: on at `on_at`, off at `off_at`)."""
        if self.market is None:
            return
        if activity >= self.market.on_at:
            self._market_active = True
        elif activity <= self.market.off_at:
            self._market_active = False

    def evaluate(self, now_ms: int, activity: float | None = None) -> ModeSwitch | None:
        """The mode at `now_ms` (sim-time in replays); a ModeSwitch when it changed."""
        if activity is not None:
            self.observe_activity(activity)
        mode, trigger = self.choose(now_ms)
        if mode == self.current:
            return None
        switch = ModeSwitch(self.current, mode, trigger, now_ms)
        self.current = mode
        return switch

    def choose(self, now_ms: int) -> tuple[str, str]:
        """The mode that applies at `now_ms` and why, without recording a switch."""
        if self.explicit is not None:
            return self.explicit, "explicit"
        if self._market_active and self.market is not None:
            return self.market.mode, "market"
        if not self.schedule:
            return self.default, "default"
        local = datetime.fromtimestamp(now_ms / 1000, tz=self.timezone)
        for window, mode in self.schedule:
            if window.contains(local):
                return mode, "schedule"
        return self.default, "default"


class ModesConfigError(ValueError):
    pass


def load_modes(path: Path) -> ModeManager:
    """Reads a modes file (see examples/modes.yaml); raises ModesConfigError saying what to fix."""
    import yaml
    from pydantic import BaseModel, ConfigDict, ValidationError

    class _Mode(BaseModel):
        model_config = ConfigDict(extra="forbid")
        z_threshold: Decimal
        take_profit_bps: Decimal
        stop_loss_bps: Decimal
        cost_bps: Decimal
        order_qty: Decimal
        per_symbol_orders_per_s: float = 0.0
        global_orders_per_s: float = 0.0
        min_consistency: float = 0.5

    class _Window(BaseModel):
        model_config = ConfigDict(extra="forbid")
        start: time
        end: time
        mode: str
        weekdays: list[int] = list(range(7))

    class _Market(BaseModel):
        model_config = ConfigDict(extra="forbid")
        mode: str
        on_at: float
        off_at: float

    class _Filters(BaseModel):
        model_config = ConfigDict(extra="forbid")
        tick_size: Decimal
        step_size: Decimal
        min_notional: Decimal

    class _File(BaseModel):
        model_config = ConfigDict(extra="forbid")
        timezone: str
        default: str
        modes: dict[str, _Mode]
        schedule: list[_Window] = []
        market: _Market | None = None
        symbols: dict[str, _Filters] = {}
        rules: dict[str, Any] | None = None

    try:
        raw = _File.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
        zone = ZoneInfo(raw.timezone)
    except FileNotFoundError:
        raise ModesConfigError(f"{path}: no such file (--modes PATH)") from None
    except (yaml.YAMLError, ValidationError) as exc:
        raise ModesConfigError(f"{path}: {exc}") from None
    except (KeyError, ValueError) as exc:
        raise ModesConfigError(f"{path}: timezone {exc}: use an IANA name like Europe/Berlin") from None
    try:
        manager = ModeManager(
            timezone=zone,
            modes={name: ScenarioParams(**mode.model_dump()) for name, mode in raw.modes.items()},
            default=raw.default,
            schedule=[(Window(w.start, w.end, frozenset(w.weekdays)), w.mode) for w in raw.schedule],
            market=MarketTrigger(raw.market.mode, raw.market.on_at, raw.market.off_at) if raw.market else None,
        )
    except ValueError as exc:
        raise ModesConfigError(f"{path}: {exc}") from None
    try:
        manager.rules = parse_rules(raw.rules, manager.modes)
    except RulesConfigError as exc:
        raise ModesConfigError(f"{path}: {exc}") from None
    manager.symbol_filters = {
        name: SymbolFilters(f.tick_size, f.step_size, f.min_notional) for name, f in raw.symbols.items()
    }
    return manager
