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

    async def submit(self, order: OrderCtx) -> ExecResult: ...

    async def cancel(self, client_order_id: str) -> CancelResult: ...

    async def amend(
        self, client_order_id: str, new_px: Decimal | None, new_qty: Decimal | None
    ) -> AmendResult: ...

    async def flush(self) -> None: ...

    async def close(self) -> None: ...
