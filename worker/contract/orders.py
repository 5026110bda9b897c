"""Executor-side contract (`executor_contract/v1`): the order handed to an executor and its results."""

from __future__ import annotations

from decimal import Decimal

from pydantic import BaseModel, ConfigDict, Field

from worker.contract.enums import OrderStatus, OrderType, Side, TimeInForce
from worker.contract.types import (
    DecimalStr,
    Label,
    NonNegativeDecimal,
    PositiveDecimal,
    RowId,
    RuleName,
    Symbol,
    TimestampMs,
)

_INTERNAL = ConfigDict(frozen=True, extra="forbid", defer_build=True)


class SourceRef(BaseModel):
    """Kafka coordinates of the input message an event or DLQ record comes from."""

    model_config = _INTERNAL

    topic: str = Field(description="Input topic.")
    partition: int = Field(ge=0, description="Input partition.")
    offset: int = Field(ge=0, description="Input offset.")


class OrderCtx(BaseModel):
    """An order ready for an executor: already gated, rounded to the venue grid and given its id."""

    model_config = _INTERNAL

    client_order_id: str = Field(description="Idempotency key, derived from the rounded order.")
    signal_row_id: RowId = Field(description="Upstream signal row.")
    symbol: Symbol = Field(description="Venue symbol.")
    side: Side = Field(description="BUY or SELL.")
    order_type: OrderType = Field(description="LIMIT or MARKET.")
    tif: TimeInForce = Field(description="Time in force.")
    qty: PositiveDecimal = Field(description="Quantity after step rounding.")
    px: PositiveDecimal | None = Field(description="Price after tick rounding; null for MARKET.")
    px_intent: PositiveDecimal | None = Field(description="Price asked for upstream, before rounding.")
    qty_intent: PositiveDecimal = Field(description="Quantity asked for upstream, before rounding.")
    rounding_applied: bool = Field(description="Price or quantity was moved onto the venue grid.")
    rounding_diff: DecimalStr = Field(description="px - px_intent (0 when no price).")
    tick_size: PositiveDecimal = Field(description="Venue price increment.")
    step_size: PositiveDecimal = Field(description="Venue quantity increment.")
    min_notional: NonNegativeDecimal = Field(description="Venue minimum price x qty.")
    costs_bps: NonNegativeDecimal = Field(description="Expected round-trip costs.")
    ts_ms: TimestampMs = Field(description="When Strategy made the decision.")
    event_ts_ms: TimestampMs = Field(description="Market event time; sim-time in backtests.")
    regime: Label = Field(description="Market regime label.")
    scenario: Label = Field(description="Scenario parameters in force.")
    mode: Label = Field(description="Strategy mode in force when the order was built.")
    source: SourceRef = Field(description="Input message coordinates.")
    # The venue request, fixed by the committed intent (live only; None in backtests).
    sent_ts_ms: int | None = Field(default=None, description="The request's timestamp (venue clock, ms).")
    recv_window_ms: int | None = Field(default=None, description="The request's recvWindow (ms).")
    attempt: int = Field(default=1, ge=1, description="Which intent of this order the request belongs to.")
    observed: tuple[RuleName, ...] | None = Field(
        default=None, description="Rules in `observe` that would have stopped this order (sorted); absent when none."
    )


class ExecResult(BaseModel):
    """What an executor reports for one submitted order."""

    model_config = _INTERNAL

    status: OrderStatus = Field(description="Order status the executor reports.")
    reason: str | None = Field(default=None, description="Reject or expiry reason, or null.")
    exchange_order_id: str | None = Field(default=None, description="Venue order id, once acknowledged.")
    px_sent: PositiveDecimal | None = Field(default=None, description="Price sent to the venue.")
    px_fill: PositiveDecimal | None = Field(default=None, description="Average fill price.")
    qty_filled: NonNegativeDecimal = Field(default=Decimal(0), description="Cumulative filled quantity.")
    sent_ts_ms: int | None = Field(default=None, description="When the order was sent.")
    ack_ts_ms: int | None = Field(default=None, description="When the venue acknowledged it.")
    round_trip_ms: int | None = Field(
        default=None,
        ge=0,
        description="The round trip of the request that was answered, without retry backoff (live venues); "
        "null when no request was answered or the executor is simulated.",
    )

    @property
    def accepted(self) -> bool:
        return self.status not in (OrderStatus.REJECTED, OrderStatus.DENIED, OrderStatus.THROTTLED)

    @property
    def latency_ms(self) -> int | None:
        if self.sent_ts_ms is None or self.ack_ts_ms is None:
            return None
        return self.ack_ts_ms - self.sent_ts_ms


class CancelResult(BaseModel):
    model_config = _INTERNAL

    client_order_id: str = Field(description="Order the cancel was for.")
    status: OrderStatus = Field(description="CANCELED on success; the order status otherwise.")
    reason: str | None = Field(default=None, description="Why the cancel failed, or null.")
    ack_ts_ms: int | None = Field(default=None, description="When the venue acknowledged the cancel.")


class AmendResult(BaseModel):
    model_config = _INTERNAL

    client_order_id: str = Field(description="Order the amend was for.")
    status: OrderStatus = Field(description="Order status after the amend (REJECTED if refused).")
    reason: str | None = Field(default=None, description="Why the amend failed, or null.")
    px: PositiveDecimal | None = Field(default=None, description="Price in force after the amend.")
    qty: PositiveDecimal | None = Field(default=None, description="Quantity in force after the amend.")
    ack_ts_ms: int | None = Field(default=None, description="When the venue acknowledged the amend.")
