"""Signed account endpoints: `GET /api/v3/account`, and the body of `GET /api/v3/openOrders`
(served through the server's `_guarded`, like the order endpoints; the delivery faults apply to
`/api/v3/order*` only)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from worker.io.binance.protocol import ErrorCode
from worker.sandbox.account import order_view
from worker.sandbox.errors import ApiError
from worker.sandbox.limits import WEIGHTS

if TYPE_CHECKING:
    from worker.sandbox.server import SandboxExchange


def open_orders(exchange: SandboxExchange, params: dict[str, str]) -> list[dict[str, Any]]:
    """Open orders of one symbol, or of all symbols when none is given (weight 6 or 80)."""
    symbol = params.get("symbol") or None
    if symbol is not None and symbol not in exchange.listings:
        raise ApiError(400, ErrorCode.BAD_SYMBOL, "Invalid symbol.")
    return [order_view(order) for order in exchange.account.open_orders(symbol)]


async def account(exchange: SandboxExchange, request: web.Request) -> web.Response:
    def body(params: dict[str, str]) -> dict[str, Any]:
        omit_zero = params.get("omitZeroBalances", "false").lower() == "true"
        return exchange.account.account_json(exchange.now_ms(), omit_zero)

    return await exchange.signed(request, WEIGHTS["account"], body)
