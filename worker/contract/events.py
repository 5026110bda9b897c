"""Outbound messages of `executor_contract/v1`: the exec-event and the DLQ record."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from worker.contract.enums import OrderStatus, OrderType, Side, TimeInForce
from worker.contract.orders import SourceRef
from worker.contract.types import DecimalStr, NonNegativeDecimal, PositiveDecimal, RuleName, Symbol

# Field order is the wire order: exec-events are serialised canonically (declared order, no
# whitespace) so that a replay can be compared byte for byte. Never reorder; only append.
_OUTBOUND = ConfigDict(frozen=True, extra="forbid", defer_build=True)


def _absent(value: object) -> bool:
    """Optional fields added after v1 shipped are left out of the JSON when unset."""
    return value is None


class ExecEvent(BaseModel):
    """One step in the life of one order, as published to `exec-events.v1` and the outbox."""

    model_config = _OUTBOUND

    event_id: str = Field(description="Unique, deterministic id: `{client_order_id}.{seq}`.")
    client_order_id: str = Field(description="Idempotency key of the order.")
    signal_row_id: str = Field(description="Upstream signal row.")
    symbol: Symbol = Field(description="Venue symbol.")
    side: Side = Field(description="BUY or SELL.")
    qty: PositiveDecimal = Field(description="Order quantity after rounding (base units).")
    px_intent: PositiveDecimal | None = Field(description="Price asked for upstream (quote units).")
    px_sent: PositiveDecimal | None = Field(description="Price sent to the venue, after tick rounding.")
    px_fill: PositiveDecimal | None = Field(description="Average fill price, when filled.")
    qty_filled: NonNegativeDecimal = Field(description="Cumulative filled quantity.")
    rounding_applied: bool = Field(description="Price or quantity was moved onto the venue grid.")
    rounding_diff: DecimalStr = Field(description="px_sent - px_intent (quote units).")
    slippage_bps: DecimalStr | None = Field(
        description="Adverse fill slippage against px_intent in basis points (rounding included)."
    )
    exchange_order_id: str | None = Field(description="Venue order id, once acknowledged.")
    status: OrderStatus = Field(description="Order status after this event.")
    reason: str | None = Field(description="Why (deny/throttle/reject reason), or null.")
    sent_ts_ms: int | None = Field(description="When the order was sent (ms; sim-time in backtests).")
    ack_ts_ms: int | None = Field(description="When the venue acknowledged it (ms).")
    event_ts_ms: int = Field(description="Market event time of the command (ms).")
    latency_ms: int | None = Field(description="ack_ts_ms - sent_ts_ms.")
    executor: str = Field(description="Executor that handled the order: backtest, sandbox, binance, shadow.")
    mode: str = Field(description="Strategy mode in force.")
    scenario: str = Field(description="Scenario parameters in force.")
    source: SourceRef = Field(description="Input message coordinates.")
    # The venue request of an intent (SUBMITTED, PENDING_CANCEL), fixed before it is sent: every
    # copy of it expires at sent_ts_ms + recv_window_ms on the venue's clock. Absent from events
    # that record no request (backtests), so their bytes and replay digests do not change.
    recv_window_ms: int | None = Field(
        default=None,
        exclude_if=_absent,
        description="recvWindow of this intent's request (ms): it expires at sent_ts_ms + recv_window_ms.",
    )
    attempt: int | None = Field(
        default=None,
        exclude_if=_absent,
        description="Which intent of the order this is: 1 = first send, 2 = the first resend, ...",
    )
    order_type: OrderType | None = Field(default=None, exclude_if=_absent, description="LIMIT or MARKET, on intents.")
    tif: TimeInForce | None = Field(default=None, exclude_if=_absent, description="Time in force, on intents.")
    observed: tuple[RuleName, ...] | None = Field(
        default=None,
        exclude_if=_absent,
        description=(
            "Rollout: rules in `observe` state that would have stopped this order, which went ahead "
            "(sorted rule names, on every event of the order); absent when none."
        ),
    )


class Header(BaseModel):
    """One Kafka header of an original message."""

    model_config = _OUTBOUND

    name: str = Field(description="Header name.")
    value_b64: str | None = Field(description="Header value bytes, base64 (null for a null value).")


class DlqRecord(BaseModel):
    """A message the worker could not use, with where it came from and why.

    Kept whole up to a size the DLQ topic accepts; a larger value is cut (value_b64 holds its
    first bytes) and identified by value_size and value_sha256, so it is never lost silently and
    never blocks the partition behind it.
    """

    model_config = _OUTBOUND

    source: SourceRef = Field(description="Where the bad message was read.")
    error_class: str = Field(description="Machine-readable class: json, schema, value, size, ...")
    reason: str = Field(description="What is wrong, in words a person can act on.")
    key_b64: str | None = Field(description="Original key bytes, base64.")
    value_b64: str | None = Field(description="Original value bytes, base64.")
    headers: list[Header] = Field(description="Original headers, in order.")
    timestamp_ms: int = Field(description="Kafka timestamp of the original message.")
    value_size: int | None = Field(
        default=None,
        exclude_if=_absent,
        description="Size of the original value in bytes, when value_b64 holds only its first part.",
    )
    value_sha256: str | None = Field(
        default=None,
        exclude_if=_absent,
        description="SHA-256 (hex) of the whole original value, when value_b64 holds only its first part.",
    )
