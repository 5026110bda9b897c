"""The backtest executor: fills in simulated time, with seeded latency; no network."""

from __future__ import annotations

from decimal import Decimal

from worker.contract.enums import ExecutorKind, OrderStatus
from worker.contract.orders import AmendResult, CancelResult, ExecResult, OrderCtx
from worker.execution.fills import FillModel, ImmediateFill
from worker.execution.latency import LatencyModel
from worker.execution.market import MarketView
from worker.policy.rng import Rng


class BacktestExecutor:
    """Fills orders by a pluggable model (`worker.execution.fills`; default: a LIMIT at once at its
    price, a MARKET at its reference), against an optional market view in market time.

    Time is simulated: an order is sent at its own `event_ts_ms` and acknowledged after a seeded
    latency draw, so the same order always reports the same timestamps, whatever was processed
    before it and however the input was partitioned.
    """

    name = ExecutorKind.BACKTEST.value
    requires_intent = False  # no effects outside Kafka: one transaction per batch is enough

    def __init__(
        self,
        rng: Rng,
        latency: LatencyModel | None = None,
        fills: FillModel | None = None,
        market: MarketView | None = None,
    ) -> None:
        self._rng = rng
        self._latency = latency or LatencyModel()
        self._fills = fills or ImmediateFill()
        self._market = market

    async def submit(self, order: OrderCtx) -> ExecResult:
        sent_ts_ms = order.event_ts_ms
        ack_ts_ms = sent_ts_ms + self._latency.sample_ms(self._rng, order.client_order_id)
        # The market as of the acknowledgement: what the order meets after its latency.
        quote = self._market.quote_at(order.symbol, ack_ts_ms) if self._market is not None else None
        fill = self._fills.fill(order, quote)
        return ExecResult(
            status=fill.status,
            reason=fill.reason,
            exchange_order_id=None if fill.status is OrderStatus.REJECTED else f"bt-{order.client_order_id}",
            px_sent=order.px,
            px_fill=fill.px_fill,
            qty_filled=fill.qty_filled,
            sent_ts_ms=sent_ts_ms,
            ack_ts_ms=ack_ts_ms,
        )

    async def cancel(self, client_order_id: str) -> CancelResult:
        # Orders fill at once here, so there is never anything left to cancel.
        return CancelResult(
            client_order_id=client_order_id,
            status=OrderStatus.REJECTED,
            reason="unknown_order",
        )

    async def amend(self, client_order_id: str, new_px: Decimal | None, new_qty: Decimal | None) -> AmendResult:
        return AmendResult(
            client_order_id=client_order_id,
            status=OrderStatus.REJECTED,
            reason="unknown_order",
        )

    async def query(self, client_order_id: str, symbol: str) -> ExecResult | None:
        return None  # nothing ever rests here

    async def flush(self) -> None:
        return None

    async def close(self) -> None:
        return None
