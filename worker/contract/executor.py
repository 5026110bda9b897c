"""The `IExecutor` protocol that every executor (backtest, sandbox, live, shadow) implements."""

from __future__ import annotations

from decimal import Decimal
from typing import Protocol, runtime_checkable

from worker.contract.orders import AmendResult, CancelResult, ExecResult, OrderCtx


@runtime_checkable
class IExecutor(Protocol):
    """Sends orders somewhere and reports what happened.

    Implementations must be idempotent by `client_order_id`: submitting the same order twice must
    never create two orders. `cancel` and `amend` change local state only once the venue has
    acknowledged them.
    """

    name: str
    # True when submit() has effects outside Kafka (a venue): the runtime then commits the
    # order's SUBMITTED intent before calling submit(), so a crash in between is reconciled.
    requires_intent: bool

    async def submit(self, order: OrderCtx) -> ExecResult: ...

    async def cancel(self, client_order_id: str) -> CancelResult: ...

    async def amend(self, client_order_id: str, new_px: Decimal | None, new_qty: Decimal | None) -> AmendResult: ...

    async def query(self, client_order_id: str, symbol: str) -> ExecResult | None:
        """The venue's current view of an order (None: the venue has no such order)."""
        ...

    async def flush(self) -> None: ...

    async def close(self) -> None: ...
