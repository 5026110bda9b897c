"""Inbound messages of `risk_contract/v1`: a decision (Strategy+Risk) and a signal (Signal layer)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

from worker.contract.enums import Action, OrderType, Side, TimeInForce
from worker.contract.types import (
    DecimalStr,
    Label,
    NonNegativeDecimal,
    PositiveDecimal,
    RowId,
    Symbol,
    TimestampMs,
)

Unit = Annotated[float, Field(ge=0.0, le=1.0, strict=True, allow_inf_nan=False)]

# Unknown fields are ignored, not refused: upstream may add fields (a backward-compatible change)
# before this worker learns of them. Everything declared is checked strictly.
# cache_strings="keys": values (ids, prices) rarely repeat, so caching them costs more than it saves
# (measured: -0.3 us per decision).
# defer_build: schemas are built on first use, so a process that never validates one (a compiled
# replay) does not pay for building them at import.
_INBOUND = ConfigDict(
    strict=True, extra="ignore", frozen=True, allow_inf_nan=False, cache_strings="keys", defer_build=True
)


class Decision(BaseModel):
    """An order decision from Strategy+Risk: what to trade, at what price, under which state."""

    model_config = _INBOUND

    signal_row_id: RowId = Field(description="Id of the upstream signal row this decision comes from.")
    ts_ms: TimestampMs = Field(description="When Strategy made the decision (ms since epoch, UTC).")
    event_ts_ms: TimestampMs = Field(description="Market event time the decision refers to (ms, UTC); drives sim-time.")
    symbol: Symbol = Field(description="Venue symbol, e.g. BTCUSDT.")
    side: Side = Field(description="BUY or SELL.")
    qty: PositiveDecimal = Field(description="Quantity in base asset units, before step rounding.")
    px: PositiveDecimal | None = Field(description="Limit price in quote units; null means a market order.")
    order_type: OrderType = Field(description="LIMIT or MARKET.")
    tif: TimeInForce = Field(description="Time in force: GTC, IOC or FOK.")
    regime: Label = Field(description="Market regime label from upstream.")
    scenario: Label = Field(description="Scenario (parameter set) name from the strategy mode.")
    tick_size: PositiveDecimal = Field(description="Venue price increment.")
    step_size: PositiveDecimal = Field(description="Venue quantity increment.")
    min_notional: NonNegativeDecimal = Field(description="Venue minimum price x qty.")
    warmup: bool = Field(description="Upstream still warming up: the order is denied.")
    guard_reason: Label | None = Field(description="Active upstream guard (null or empty = none): the order is denied.")
    consistency: Unit = Field(description="Signal consistency 0..1; low values are down-sampled.")
    weak_signal_throttle: bool = Field(description="Upstream marks the signal weak: throttled.")
    costs_bps: NonNegativeDecimal = Field(description="Expected round-trip costs in basis points.")
    action: Action = Field(default=Action.NEW, description="NEW (default), CANCEL or AMEND.")
    target_client_order_id: Annotated[str, Field(max_length=36, pattern=r"^[.A-Z:/a-z0-9_-]{1,36}$")] | None = Field(
        default=None, description="For CANCEL/AMEND: the order to act on."
    )
    new_px: PositiveDecimal | None = Field(default=None, description="For AMEND: the new price.")
    new_qty: PositiveDecimal | None = Field(default=None, description="For AMEND: the new quantity.")

    @model_validator(mode="after")
    def _coherent(self) -> Decision:
        if self.order_type is OrderType.LIMIT and self.px is None:
            raise ValueError("a LIMIT order needs px (px = null means MARKET)")
        if self.action is not Action.NEW and self.target_client_order_id is None:
            raise ValueError(f"{self.action} needs target_client_order_id")
        if self.action is Action.AMEND and self.new_px is None and self.new_qty is None:
            raise ValueError("AMEND needs new_px or new_qty")
        return self

    @property
    def is_guarded(self) -> bool:
        return bool(self.guard_reason)


class Signal(BaseModel):
    """A scored signal from the Signal layer; the strategy mode turns it into a command or not."""

    model_config = _INBOUND

    signal_row_id: RowId = Field(description="Unique id of this signal row.")
    ts_ms: TimestampMs = Field(description="When the signal was computed (ms, UTC).")
    event_ts_ms: TimestampMs = Field(description="Market event time (ms, UTC).")
    symbol: Symbol = Field(description="Venue symbol.")
    score: DecimalStr = Field(description="Signed signal strength (z-score); the sign gives the side.")
    regime: Label = Field(description="Market regime label.")
    warmup: bool = Field(description="Upstream still warming up.")
    guard_reason: Label | None = Field(description="Active upstream guard, or null.")
    consistency: Unit = Field(description="Signal consistency 0..1.")
    weak_signal_throttle: bool = Field(description="Upstream marks the signal weak.")
    gate_reason_stats: dict[Label, Annotated[int, Field(ge=0, strict=True)]] = Field(
        description="Recent counts of upstream gate reasons, by reason."
    )


class StrategyModeCommand(BaseModel):
    """`strategy-mode.v1` (compacted): an operator's or Strategy's explicit mode, or null to clear."""

    model_config = _INBOUND

    mode: Label | None = Field(description="Mode to force (a name from the modes file); null returns to the rules.")
    ts_ms: TimestampMs = Field(description="When the command was issued (ms, UTC).")
    reason: Label = Field(default="", description="Why, for the audit log.")


class HarvestHealth(BaseModel):
    """`harvest-health.v1` (compacted, keyed by symbol): the data feed's health for one symbol."""

    model_config = _INBOUND

    symbol: Symbol = Field(description="Venue symbol.")
    ts_ms: TimestampMs = Field(description="End of the measured window (ms, UTC).")
    window_rows: Annotated[int, Field(ge=0, strict=True)] = Field(description="Rows harvested in the window.")
    dedupe_count: Annotated[int, Field(ge=0, strict=True)] = Field(description="Rows dropped as duplicates.")
    drop_count: Annotated[int, Field(ge=0, strict=True)] = Field(description="Rows lost (gaps, errors).")
    stale: bool = Field(description="The feed has stopped: no new orders for this symbol.")


class BookLevel(BaseModel):
    """One price level of an order book."""

    model_config = _INBOUND

    px: PositiveDecimal = Field(description="Level price.")
    qty: PositiveDecimal = Field(description="Quantity available at that price.")


class MarketSnapshot(BaseModel):
    """`market.v1`: the market for one symbol at one event time (top of book, optional depth,
    optional last trade). Backtests order it by `event_time_ms`."""

    model_config = _INBOUND

    symbol: Symbol = Field(description="Venue symbol.")
    event_time_ms: TimestampMs = Field(description="Exchange event time (ms, UTC).")
    bid: PositiveDecimal = Field(description="Best bid.")
    ask: PositiveDecimal = Field(description="Best ask.")
    bids: list[BookLevel] = Field(default_factory=list, description="Bid levels, best first.")
    asks: list[BookLevel] = Field(default_factory=list, description="Ask levels, best first.")
    last_px: PositiveDecimal | None = Field(default=None, description="Last trade price, if any.")
