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
    Symbol,
    TimestampMs,
)

_INTERNAL = ConfigDict(frozen=True, extra="forbid")


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
    symbol: Symbol
    side: Side
    order_type: OrderType
    tif: TimeInForce
    qty: PositiveDecimal = Field(description="Quantity after step rounding.")
    px: PositiveDecimal | None = Field(description="Price after tick rounding; null for MARKET.")
    px_intent: PositiveDecimal | None = Field(description="Price asked for upstream, before rounding.")
    qty_intent: PositiveDecimal = Field(description="Quantity asked for upstream, before rounding.")
    rounding_applied: bool
    rounding_diff: DecimalStr = Field(description="px - px_intent (0 when no price).")
    tick_size: PositiveDecimal
    step_size: PositiveDecimal
    min_notional: NonNegativeDecimal
    costs_bps: NonNegativeDecimal
    ts_ms: TimestampMs
    event_ts_ms: TimestampMs
    regime: Label
    scenario: Label
    mode: Label = Field(description="Strategy mode in force when the order was built.")
    source: SourceRef


class ExecResult(BaseModel):
    """What an executor reports for one submitted order."""

    model_config = _INTERNAL

    status: OrderStatus
    reason: str | None = None
    exchange_order_id: str | None = None
    px_sent: PositiveDecimal | None = None
    px_fill: PositiveDecimal | None = None
    qty_filled: NonNegativeDecimal = Decimal(0)
    sent_ts_ms: int | None = None
    ack_ts_ms: int | None = None

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

    client_order_id: str
    status: OrderStatus
    reason: str | None = None
    ack_ts_ms: int | None = None


class AmendResult(BaseModel):
    model_config = _INTERNAL

    client_order_id: str
    status: OrderStatus
    reason: str | None = None
    px: PositiveDecimal | None = None
    qty: PositiveDecimal | None = None
    ack_ts_ms: int | None = None
