"""The sandbox exchange's HTTP server (aiohttp): Binance spot REST subset + `/sandbox/ledger`.

Endpoints: `GET /api/v3/ping`, `GET /api/v3/time`, `GET /api/v3/exchangeInfo`,
`POST|GET|DELETE /api/v3/order`, `POST /api/v3/order/cancelReplace` (HMAC-SHA256 signed, key in
`X-MBX-APIKEY`), and `GET /sandbox/ledger`: one entry per client order id ever submitted, with how
many times it was submitted and how many times it was accepted as a new order.

A client order id may be reused once its order is no longer open, exactly like Binance: that is
the trap a worker must not fall into (`accepts > 1` in the ledger).
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from collections import deque
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web

from worker.execution.binance.protocol import (
    API_KEY_HEADER,
    ORDER_COUNT_HEADER,
    USED_WEIGHT_HEADER,
    ErrorCode,
    verify_signature,
)
from worker.sandbox.faults import Fault, FaultPlan
from worker.sandbox.matching import Market, VenueOrder

log = logging.getLogger(__name__)

DEFAULT_API_KEY = "sandbox-key"
DEFAULT_API_SECRET = "sandbox-secret"
_COID = re.compile(r"^[.A-Z:/a-z0-9_-]{1,36}$")
_WEIGHTS = {
    "exchangeInfo": 20,
    "order:GET": 4,
    "order:POST": 1,
    "order:DELETE": 1,
    "cancelReplace": 1,
    "openOrders": 6,  # with a symbol (80 without; refused here)
}


class ApiError(Exception):
    def __init__(self, status: int, code: int, msg: str) -> None:
        super().__init__(msg)
        self.status, self.code, self.msg = status, code, msg


@dataclass
class LedgerEntry:
    client_order_id: str
    symbol: str
    side: str
    price: str | None
    qty: str
    status: str
    submits: int = 0
    accepts: int = 0


@dataclass(frozen=True)
class Limits:
    # Binance spot defaults are 6,000 weight/min and 50 orders/10 s per account; the sandbox is
    # generous by default so tests hit the limits only when they mean to.
    weight_per_minute: int = 60_000
    orders_per_10s: int = 10_000


class SandboxExchange:
    def __init__(
        self,
        market: Market,
        faults: FaultPlan,
        seed: int,
        api_key: str = DEFAULT_API_KEY,
        api_secret: str = DEFAULT_API_SECRET,
        limits: Limits | None = None,
    ) -> None:
        self.market = market
        self.faults = faults
        self._rng = random.Random(seed)
        self._api_key = api_key
        self._api_secret = api_secret
        self.limits = limits or Limits()
        self.orders: dict[str, VenueOrder] = {}  # latest order per client order id
        self.ledger: dict[str, LedgerEntry] = {}
        self._next_id = 1
        self._weights: deque[tuple[float, int]] = deque()
        self._order_times: deque[float] = deque()
        self.fault_counts: dict[str, int] = {}
        self._requests = 0  # order-endpoint requests seen, for scripted faults

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/api/v3/ping", self._ping)
        app.router.add_get("/api/v3/time", self._time)
        app.router.add_get("/api/v3/exchangeInfo", self._exchange_info)
        app.router.add_post("/api/v3/order", self._new_order)
        app.router.add_get("/api/v3/order", self._query_order)
        app.router.add_get("/api/v3/openOrders", self._open_orders)
        app.router.add_delete("/api/v3/order", self._cancel_order)
        app.router.add_post("/api/v3/order/cancelReplace", self._cancel_replace)
        app.router.add_get("/sandbox/ledger", self._ledger)
        app.router.add_post("/sandbox/quote", self._set_quote)
        return app

    # -- plumbing --------------------------------------------------------------------------------

    def _rate_headers(self, weight: int, is_order: bool) -> dict[str, str]:
        now = time.monotonic()
        self._weights.append((now, weight))
        while self._weights and self._weights[0][0] < now - 60:
            self._weights.popleft()
        if is_order:
            self._order_times.append(now)
        while self._order_times and self._order_times[0] < now - 10:
            self._order_times.popleft()
        return {
            USED_WEIGHT_HEADER: str(sum(w for _, w in self._weights)),
            ORDER_COUNT_HEADER: str(len(self._order_times)),
        }

    def _over_limit(self, headers: dict[str, str]) -> bool:
        return (
            int(headers[USED_WEIGHT_HEADER]) > self.limits.weight_per_minute
            or int(headers[ORDER_COUNT_HEADER]) > self.limits.orders_per_10s
        )

    async def _params(self, request: web.Request, signed: bool = True) -> dict[str, str]:
        raw_query = request.query_string
        body = (await request.text()) if request.can_read_body else ""
        params = dict(parse_qsl(raw_query, keep_blank_values=True))
        params.update(parse_qsl(body, keep_blank_values=True))
        if not signed:
            return params
        if request.headers.get(API_KEY_HEADER) != self._api_key:
            raise ApiError(401, ErrorCode.REJECTED_MBX_KEY, "Invalid API-key, IP, or permissions for action.")
        signature = params.pop("signature", "")
        total = re.sub(r"&?signature=[0-9a-fA-F]*", "", raw_query) + body
        if not verify_signature(total, signature, self._api_secret):
            raise ApiError(400, ErrorCode.INVALID_SIGNATURE, "Signature for this request is not valid.")
        try:
            timestamp = int(params["timestamp"])
            window = int(params.get("recvWindow", "5000"))
        except (KeyError, ValueError):
            raise ApiError(400, ErrorCode.MANDATORY_PARAM, "Mandatory parameter 'timestamp' was not sent.") from None
        if abs(time.time() * 1000 - timestamp) > window:
            raise ApiError(400, ErrorCode.INVALID_TIMESTAMP, "Timestamp for this request is outside of the recvWindow.")
        return params

    async def _guarded(self, request: web.Request, weight_key: str, handler: Any) -> web.StreamResponse:
        """Faults, rate limits, signature, then the handler; errors as Binance JSON."""
        is_order = request.method in ("POST", "DELETE") or weight_key == "cancelReplace"
        fault, delay = self.faults.draw(self._rng, self._requests)
        self._requests += 1
        if delay:
            await asyncio.sleep(delay)
        if fault is not None:
            self.fault_counts[fault.value] = self.fault_counts.get(fault.value, 0) + 1
        headers = self._rate_headers(_WEIGHTS[weight_key], is_order)
        if fault is Fault.DROP:
            return self._drop(request)
        if fault is Fault.TIMEOUT_BEFORE:
            await asyncio.sleep(self.faults.hang_s)
            return self._drop(request)
        if fault is Fault.ERROR_5XX:
            return _error(503, ErrorCode.DISCONNECTED, "Internal error; unable to process your request.", headers)
        if fault in (Fault.RATE_429, Fault.BAN_418) or self._over_limit(headers):
            status = 418 if fault is Fault.BAN_418 else 429
            retry = {**headers, "Retry-After": str(self.faults.retry_after_s)}
            return _error(status, ErrorCode.TOO_MANY_REQUESTS, "Too much request weight used.", retry)
        try:
            params = await self._params(request)
            body = handler(params)
        except ApiError as exc:
            return _error(exc.status, exc.code, exc.msg, headers)
        if fault is Fault.TIMEOUT_AFTER:
            await asyncio.sleep(self.faults.hang_s)
            return self._drop(request)
        if fault is Fault.ERROR_5XX_AFTER:
            return _error(500, ErrorCode.TIMEOUT, "Timeout waiting for response from backend server.", headers)
        return web.json_response(body, headers=headers)

    @staticmethod
    def _drop(request: web.Request) -> web.StreamResponse:
        if request.transport is not None:
            request.transport.abort()
        return web.Response(status=599)  # never delivered: the connection is gone

    # -- endpoints -------------------------------------------------------------------------------

    async def _ping(self, request: web.Request) -> web.Response:
        return web.json_response({})

    async def _time(self, request: web.Request) -> web.Response:
        return web.json_response({"serverTime": int(time.time() * 1000)})

    async def _exchange_info(self, request: web.Request) -> web.Response:
        symbols = []
        for spec in self.market.specs.values():
            symbols.append(
                {
                    "symbol": spec.symbol,
                    "status": "TRADING",
                    "orderTypes": ["LIMIT", "MARKET"],
                    "filters": [
                        {
                            "filterType": "PRICE_FILTER",
                            "minPrice": format(spec.min_price, "f"),
                            "maxPrice": format(spec.max_price, "f"),
                            "tickSize": format(spec.tick_size, "f"),
                        },
                        {
                            "filterType": "LOT_SIZE",
                            "minQty": format(spec.min_qty, "f"),
                            "maxQty": format(spec.max_qty, "f"),
                            "stepSize": format(spec.step_size, "f"),
                        },
                        {
                            "filterType": "NOTIONAL",
                            "minNotional": format(spec.min_notional, "f"),
                            "applyMinToMarket": True,
                        },
                    ],
                }
            )
        headers = self._rate_headers(_WEIGHTS["exchangeInfo"], False)
        rate_limits = [
            {
                "rateLimitType": "REQUEST_WEIGHT",
                "interval": "MINUTE",
                "intervalNum": 1,
                "limit": self.limits.weight_per_minute,
            },
            {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": self.limits.orders_per_10s},
        ]
        body = {"timezone": "UTC", "rateLimits": rate_limits, "symbols": symbols}
        return web.json_response(body, headers=headers)

    async def _new_order(self, request: web.Request) -> web.StreamResponse:
        return await self._guarded(request, "order:POST", self._place)

    async def _query_order(self, request: web.Request) -> web.StreamResponse:
        return await self._guarded(request, "order:GET", lambda p: self._find(p, ErrorCode.NO_SUCH_ORDER).to_json())

    async def _open_orders(self, request: web.Request) -> web.StreamResponse:
        def listing(params: dict[str, str]) -> list[dict[str, Any]]:
            symbol = params.get("symbol")
            if not symbol:
                raise ApiError(400, ErrorCode.MANDATORY_PARAM, "Mandatory parameter 'symbol' was not sent.")
            return [o.to_json() for _, o in sorted(self.orders.items()) if o.symbol == symbol and o.is_open]

        return await self._guarded(request, "openOrders", listing)

    async def _cancel_order(self, request: web.Request) -> web.StreamResponse:
        return await self._guarded(request, "order:DELETE", self._cancel)

    async def _cancel_replace(self, request: web.Request) -> web.StreamResponse:
        def replace(params: dict[str, str]) -> dict[str, Any]:
            cancelled = self._cancel({**params, "origClientOrderId": params.get("cancelOrigClientOrderId", "")})
            placed = self._place(params)
            return {
                "cancelResult": "SUCCESS",
                "newOrderResult": "SUCCESS",
                "cancelResponse": cancelled,
                "newOrderResponse": placed,
            }

        return await self._guarded(request, "cancelReplace", replace)

    async def _set_quote(self, request: web.Request) -> web.Response:
        """Test and replay hook (not Binance): pin a symbol's quote, `{"symbol", "bid", "ask"}`."""
        body = await request.json()
        try:
            symbol, bid, ask = body["symbol"], Decimal(str(body["bid"])), Decimal(str(body["ask"]))
        except (KeyError, InvalidOperation):
            return web.json_response({"error": "expected {symbol, bid, ask}"}, status=400)
        if symbol not in self.market.specs or not 0 < bid <= ask:
            return web.json_response({"error": "unknown symbol or bid > ask"}, status=400)
        self.market.set_quote(symbol, bid, ask)
        return web.json_response({"symbol": symbol, "bid": str(bid), "ask": str(ask)})

    async def _ledger(self, request: web.Request) -> web.Response:
        for coid, order in self.orders.items():
            self.ledger[coid].status = order.status  # resting orders may have filled since
        orders = [vars(entry) for entry in sorted(self.ledger.values(), key=lambda e: e.client_order_id)]
        return web.json_response({"orders": orders, "faults": self.fault_counts})

    # -- order logic -----------------------------------------------------------------------------

    def _place(self, params: dict[str, str]) -> dict[str, Any]:
        for name in ("symbol", "side", "type", "quantity", "newClientOrderId"):
            if not params.get(name):
                raise ApiError(400, ErrorCode.MANDATORY_PARAM, f"Mandatory parameter '{name}' was not sent.")
        spec = self.market.specs.get(params["symbol"])
        if spec is None:
            raise ApiError(400, ErrorCode.BAD_SYMBOL, "Invalid symbol.")
        coid = params["newClientOrderId"]
        if not _COID.match(coid):
            raise ApiError(400, -1100, "Illegal characters found in parameter 'newClientOrderId'.")
        qty = _decimal(params["quantity"], "quantity")
        price = _decimal(params["price"], "price") if params.get("price") else None
        entry = self.ledger.setdefault(
            coid,
            LedgerEntry(coid, spec.symbol, params["side"], params.get("price"), params["quantity"], "NEW"),
        )
        entry.submits += 1
        existing = self.orders.get(coid)
        if existing is not None and existing.is_open:
            raise ApiError(400, ErrorCode.NEW_ORDER_REJECTED, "Duplicate order sent.")
        if params["type"] == "LIMIT":
            if price is None or not params.get("timeInForce"):
                raise ApiError(400, ErrorCode.MANDATORY_PARAM, "Mandatory parameter 'price' was not sent.")
            if price % spec.tick_size != 0 or not spec.min_price <= price <= spec.max_price:
                raise ApiError(400, ErrorCode.INVALID_MESSAGE, "Filter failure: PRICE_FILTER")
        if qty % spec.step_size != 0 or not spec.min_qty <= qty <= spec.max_qty:
            raise ApiError(400, ErrorCode.INVALID_MESSAGE, "Filter failure: LOT_SIZE")
        reference = price if price is not None else (self.market.quote(spec.symbol) or (Decimal(0), Decimal(0)))[1]
        if reference * qty < spec.min_notional:
            raise ApiError(400, ErrorCode.INVALID_MESSAGE, "Filter failure: NOTIONAL")
        order = VenueOrder(
            order_id=self._next_id,
            client_order_id=coid,
            symbol=spec.symbol,
            side=params["side"],
            type=params["type"],
            time_in_force=params.get("timeInForce", "GTC"),
            price=price,
            orig_qty=qty,
            transact_time=int(time.time() * 1000),
        )
        self._next_id += 1
        self.market.submit(order)
        self.orders[coid] = order
        entry.accepts += 1
        entry.price, entry.qty, entry.status = params.get("price"), params["quantity"], order.status
        return order.to_json()

    def _find(self, params: dict[str, str], missing: ErrorCode) -> VenueOrder:
        order = self.orders.get(params.get("origClientOrderId", ""))
        if order is None or order.symbol != params.get("symbol", order.symbol):
            message = "Order does not exist." if missing is ErrorCode.NO_SUCH_ORDER else "Unknown order sent."
            raise ApiError(400, missing, message)
        return order

    def _cancel(self, params: dict[str, str]) -> dict[str, Any]:
        order = self._find(params, ErrorCode.CANCEL_REJECTED)
        if not order.is_open:
            raise ApiError(400, ErrorCode.CANCEL_REJECTED, "Unknown order sent.")
        self.market.cancel(order)
        self.ledger[order.client_order_id].status = order.status
        return order.to_json()


def _decimal(text: str, name: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise ApiError(400, -1100, f"Illegal characters found in parameter '{name}'.") from None
    if not value.is_finite() or value <= 0:
        raise ApiError(400, -1100, f"Illegal characters found in parameter '{name}'.")
    return value


def _error(status: int, code: int, msg: str, headers: dict[str, str]) -> web.Response:
    return web.json_response({"code": int(code), "msg": msg}, status=status, headers=headers)
