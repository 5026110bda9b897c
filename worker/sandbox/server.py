"""The sandbox exchange's HTTP server (aiohttp): Binance spot REST subset + `/sandbox/ledger`.

Endpoints: `GET /api/v3/ping`, `GET /api/v3/time`, `GET /api/v3/exchangeInfo`,
`GET /api/v3/ticker/bookTicker` (endpoints_market.py), `POST|GET|DELETE /api/v3/order`,
`GET /api/v3/openOrders`, `POST /api/v3/order/cancelReplace`, `GET /api/v3/account`
(endpoints_account.py; HMAC-SHA256 signed as Binance documents it, see signing.py, key in
`X-MBX-APIKEY`), and `GET /sandbox/ledger`: one entry per client order id ever submitted, with
how many times it was submitted and accepted as a new order.

A client order id may be reused once its order is no longer open, exactly like Binance: that is
the trap a worker must not fall into (`accepts - copy_accepts > 1` in the ledger: an accept by a
copy the `duplicate` fault injected is the network's doing, and Binance would accept it too).

A request is *received* (latency, weight, delivery faults, signature) and then *processed*
(`timestamp`/`recvWindow` against the venue's clock, the order count, the order logic). The two
are apart when a fault delivers it late (`late`) or twice (`duplicate`): the copy is processed
under the same rules as any request, so it expires (-1021) once `timestamp + recvWindow` is past.
The venue's clock is `now_ms()`: the local clock plus the fault plan's `skew`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from functools import partial
from typing import Any

from aiohttp import web

from worker.io.binance.protocol import API_KEY_HEADER, ErrorCode
from worker.sandbox import endpoints_account, endpoints_market
from worker.sandbox.account import Account
from worker.sandbox.errors import ApiError
from worker.sandbox.faults import ANSWER_LOST, Draw, Fault, FaultPlan
from worker.sandbox.limits import WEIGHTS, Limits, RateLimiter, Refusal
from worker.sandbox.matching import Market, VenueOrder
from worker.sandbox.signing import check_signature, merged_params
from worker.sandbox.symbols import Listing, listing_of

log = logging.getLogger(__name__)

DEFAULT_API_KEY = "sandbox-key"
DEFAULT_API_SECRET = "sandbox-secret"
_COID = re.compile(r"^[.A-Z:/a-z0-9_-]{1,36}$")
_NEW_ORDER_KEYS = frozenset({"order:POST", "cancelReplace"})
_MAX_RECV_WINDOW_MS = 60_000
_BAD_RECV_WINDOW = -1131
__all__ = ["DEFAULT_API_KEY", "DEFAULT_API_SECRET", "ApiError", "LedgerEntry", "Limits", "SandboxExchange"]

Handler = Callable[[dict[str, str]], Any]


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
    copy_accepts: int = 0  # of `accepts`: by a copy the `duplicate` fault delivered again
    late_accepts: int = 0  # of `accepts`: by a request the `late` fault held


class SandboxExchange:
    """The venue. `limits` default to Binance spot's (`Limits.unlimited()` for throughput runs);
    `clock` (seconds since the epoch) is the local clock the venue's `now_ms()` is skewed from."""

    def __init__(
        self,
        market: Market,
        faults: FaultPlan,
        seed: int,
        api_key: str = DEFAULT_API_KEY,
        api_secret: str = DEFAULT_API_SECRET,
        limits: Limits | None = None,
        clock: Callable[[], float] | None = None,
        listings: Iterable[Listing] | None = None,
        balances: Mapping[str, Decimal] | None = None,
    ) -> None:
        self.market = market
        self.faults = faults
        self._rng = random.Random(seed)
        self._api_key = api_key
        self._api_secret = api_secret
        self._clock = clock or time.time
        self.rates = RateLimiter(limits or Limits.binance())
        self.orders: dict[str, VenueOrder] = {}  # latest order per client order id
        self.ledger: dict[str, LedgerEntry] = {}
        self._next_id = 1
        self.fault_counts: dict[str, int] = {}
        chosen = tuple(listings) if listings is not None else tuple(listing_of(s) for s in market.specs.values())
        self.listings: dict[str, Listing] = {listing.symbol: listing for listing in chosen}
        self.account = Account(chosen, balances)
        # Processed requests by origin ("direct", "late", "copy") and result ("ok" or the error code).
        self.processed: dict[str, dict[str, int]] = {}
        self._origin = "direct"  # of the request being processed (handlers are synchronous)
        self._requests = 0  # order-endpoint requests seen, for scripted faults
        self._pending: set[asyncio.Task[None]] = set()  # late deliveries and copies to come

    @property
    def limits(self) -> Limits:
        return self.rates.limits

    @limits.setter
    def limits(self, limits: Limits) -> None:
        self.rates = RateLimiter(limits)

    def now_ms(self) -> int:
        """The venue's clock: the local clock plus the configured skew."""
        return int(self._clock() * 1000) + self.faults.skew_ms

    async def settle(self) -> None:
        """Waits until every late delivery and copy drawn so far has been processed."""
        while self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/api/v3/ping", self._ping)
        app.router.add_get("/api/v3/time", self._time)
        app.router.add_get("/api/v3/exchangeInfo", partial(endpoints_market.exchange_info, self))
        app.router.add_get("/api/v3/ticker/bookTicker", partial(endpoints_market.book_ticker, self))
        app.router.add_get("/api/v3/account", partial(endpoints_account.account, self))
        app.router.add_post("/api/v3/order", self._new_order)
        app.router.add_get("/api/v3/order", self._query_order)
        app.router.add_get("/api/v3/openOrders", self._open_orders)
        app.router.add_delete("/api/v3/order", self._cancel_order)
        app.router.add_post("/api/v3/order/cancelReplace", self._cancel_replace)
        app.router.add_get("/sandbox/ledger", self._ledger)
        app.router.add_post("/sandbox/quote", self._set_quote)
        app.on_shutdown.append(self._cancel_pending)
        return app

    # -- plumbing --------------------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        return self.rates.headers(self.now_ms())

    def _refuse(self, refusal: Refusal) -> web.Response:
        headers = {**self._headers(), "Retry-After": str(refusal.retry_after_s)}
        return _error(refusal.status, refusal.code, refusal.msg, headers)

    async def _params(self, request: web.Request, signed: bool = True, check_time: bool = True) -> dict[str, str]:
        """Query + form body as Binance reads them; for signed requests: key and signature
        (signing.py: query, body or both), then the timing rule unless it is checked later."""
        raw_query = request.raw_path.partition("?")[2]  # as sent on the wire: the signed bytes
        body = (await request.read()).decode("utf-8", "replace") if request.body_exists else ""
        params = merged_params(raw_query, body)
        if not signed:
            return params
        if request.headers.get(API_KEY_HEADER) != self._api_key:
            raise ApiError(401, ErrorCode.REJECTED_MBX_KEY, "Invalid API-key, IP, or permissions for action.")
        check_signature(raw_query, body, self._api_secret)
        params.pop("signature", None)
        if check_time:
            self._check_timestamp(params)
        return params

    def _check_timestamp(self, params: dict[str, str]) -> None:
        """Binance's timing rule, on the venue's clock at the moment of processing: accepted iff
        `timestamp < now + 1000` and `now - timestamp <= recvWindow` (default 5000, max 60000)."""
        try:
            timestamp = int(params["timestamp"])
            window = float(params.get("recvWindow", "5000"))
        except (KeyError, ValueError):
            raise ApiError(400, ErrorCode.MANDATORY_PARAM, "Mandatory parameter 'timestamp' was not sent.") from None
        if not 0 < window <= _MAX_RECV_WINDOW_MS:
            raise ApiError(400, _BAD_RECV_WINDOW, f"recvWindow must be less than {_MAX_RECV_WINDOW_MS}.")
        now = self.now_ms()
        if timestamp >= now + 1000:
            raise ApiError(
                400, ErrorCode.INVALID_TIMESTAMP, "Timestamp for this request was 1000ms ahead of the server's time."
            )
        if now - timestamp > window:
            raise ApiError(400, ErrorCode.INVALID_TIMESTAMP, "Timestamp for this request is outside of the recvWindow.")

    async def _guarded(self, request: web.Request, weight_key: str, handler: Handler) -> web.StreamResponse:
        """Receives a signed request (faults on /api/v3/order*, weight, signature), then processes
        it now, later (`late`) or twice (`duplicate`); errors as Binance JSON."""
        new_order = weight_key in _NEW_ORDER_KEYS
        draw = Draw(None)
        if request.path.startswith("/api/v3/order"):
            draw = self.faults.draw(self._rng, self._requests)
            self._requests += 1
        if draw.latency_s:
            await asyncio.sleep(draw.latency_s)
        fault = draw.fault
        if fault is not None:
            self.fault_counts[fault.value] = self.fault_counts.get(fault.value, 0) + 1
        refusal = self.rates.admit(self.now_ms(), WEIGHTS[weight_key])
        if fault is Fault.DROP:
            return self._drop(request)
        if fault is Fault.TIMEOUT_BEFORE:
            await asyncio.sleep(self.faults.hang_s)
            return self._drop(request)
        if fault is Fault.ERROR_5XX:
            return _error(
                503, ErrorCode.DISCONNECTED, "Internal error; unable to process your request.", self._headers()
            )
        if refusal is not None:
            return self._refuse(refusal)
        if fault in (Fault.RATE_429, Fault.BAN_418):
            status = 418 if fault is Fault.BAN_418 else 429
            retry = {**self._headers(), "Retry-After": str(self.faults.retry_after_s)}
            return _error(status, ErrorCode.TOO_MANY_REQUESTS, "Too much request weight used.", retry)
        try:
            params = await self._params(request, check_time=False)
        except ApiError as exc:
            return _error(exc.status, exc.code, exc.msg, self._headers())
        if fault is Fault.LATE:
            # Held, not processed: the client waits past its timeout and sees no answer; the
            # venue processes the request when the hold ends, under the rules of that moment.
            late = self._spawn(self._deliver(draw.after_s, params, handler, new_order, "late"))
            await asyncio.shield(late)
            return self._drop(request)
        try:
            body = self._process(params, handler, new_order, "direct")
        except ApiError as exc:
            headers = self._headers()
            if exc.retry_after_s is not None:
                headers["Retry-After"] = str(exc.retry_after_s)
            return _error(exc.status, exc.code, exc.msg, headers)
        finally:
            if fault is Fault.DUPLICATE:
                self._spawn(self._deliver(draw.after_s, dict(params), handler, new_order, "copy"))
        if fault in ANSWER_LOST:
            await asyncio.sleep(self.faults.hang_s)
            return self._drop(request)
        if fault is Fault.ERROR_5XX_AFTER:
            return _error(500, ErrorCode.TIMEOUT, "Timeout waiting for response from backend server.", self._headers())
        return web.json_response(body, headers=self._headers())

    def _process(self, params: dict[str, str], handler: Handler, new_order: bool, origin: str) -> Any:
        """Processes a received request now: timing rule, order count, then the handler."""
        results = self.processed.setdefault(origin, {})
        try:
            self._check_timestamp(params)
            if new_order and (refusal := self.rates.admit_order(self.now_ms())) is not None:
                raise ApiError(refusal.status, refusal.code, refusal.msg, refusal.retry_after_s)
            self._origin = origin
            try:
                body = handler(params)
            finally:
                self._origin = "direct"
        except ApiError as exc:
            results[str(exc.code)] = results.get(str(exc.code), 0) + 1
            raise
        results["ok"] = results.get("ok", 0) + 1
        return body

    async def _deliver(
        self, after_s: float, params: dict[str, str], handler: Handler, new_order: bool, origin: str
    ) -> None:
        """A late delivery or a copy: processed `after_s` from now; its answer goes nowhere."""
        await asyncio.sleep(after_s)
        with contextlib.suppress(ApiError):
            self._process(params, handler, new_order, origin)

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        return task

    async def _cancel_pending(self, app: web.Application) -> None:
        for task in list(self._pending):
            task.cancel()

    @staticmethod
    def _drop(request: web.Request) -> web.StreamResponse:
        if request.transport is not None:
            request.transport.abort()
        return web.Response(status=599)  # never delivered: the connection is gone

    # -- endpoints -------------------------------------------------------------------------------

    def _unsigned(self, weight_key: str, body: Callable[[], Any]) -> web.Response:
        refusal = self.rates.admit(self.now_ms(), WEIGHTS[weight_key])
        if refusal is not None:
            return self._refuse(refusal)
        return web.json_response(body(), headers=self._headers())

    async def public(
        self, request: web.Request, weight: int, handler: Callable[[dict[str, str]], Awaitable[Any]]
    ) -> web.Response:
        """An unsigned endpoint that reads parameters (weight by them; errors as Binance JSON)."""
        refusal = self.rates.admit(self.now_ms(), weight)
        if refusal is not None:
            return self._refuse(refusal)
        try:
            return web.json_response(await handler(await self._params(request, signed=False)), headers=self._headers())
        except ApiError as exc:
            return _error(exc.status, exc.code, exc.msg, self._headers())

    async def signed(self, request: web.Request, weight: int, handler: Callable[[dict[str, str]], Any]) -> web.Response:
        """A signed read-only endpoint (`account`): weight, key, signature, timing; no faults."""
        refusal = self.rates.admit(self.now_ms(), weight)
        if refusal is not None:
            return self._refuse(refusal)
        try:
            return web.json_response(handler(await self._params(request)), headers=self._headers())
        except ApiError as exc:
            return _error(exc.status, exc.code, exc.msg, self._headers())

    async def _ping(self, request: web.Request) -> web.Response:
        return self._unsigned("ping", dict)

    async def _time(self, request: web.Request) -> web.Response:
        return self._unsigned("time", lambda: {"serverTime": self.now_ms()})

    async def _new_order(self, request: web.Request) -> web.StreamResponse:
        return await self._guarded(request, "order:POST", self._place)

    async def _query_order(self, request: web.Request) -> web.StreamResponse:
        return await self._guarded(request, "order:GET", lambda p: self._find(p, ErrorCode.NO_SUCH_ORDER).to_json())

    async def _open_orders(self, request: web.Request) -> web.StreamResponse:
        weight_key = "openOrders" if request.query.get("symbol") else "openOrders:all"  # 6 or 80
        return await self._guarded(request, weight_key, partial(endpoints_account.open_orders, self))

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
        body = {
            "orders": orders,
            "faults": self.fault_counts,
            "processed": self.processed,
            "rate_refusals": self.rates.refusals,
            "pending_deliveries": len(self._pending),
        }
        return web.json_response(body)

    # -- order logic -----------------------------------------------------------------------------

    def _place(self, params: dict[str, str]) -> dict[str, Any]:
        if not params.get("newClientOrderId"):  # optional on Binance: the venue makes one up
            params = {**params, "newClientOrderId": f"sandbox-{self._next_id}"}
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
            transact_time=self.now_ms(),
        )
        self._next_id += 1
        self.market.submit(order)
        self.orders[coid] = order
        self.account.track(order)
        self.rates.order_placed(self.now_ms())
        if order.executed_qty > 0:
            self.rates.order_filled(self.now_ms())  # filled on arrival: off the unfilled count
        entry.accepts += 1
        entry.copy_accepts += int(self._origin == "copy")
        entry.late_accepts += int(self._origin == "late")
        entry.price, entry.qty, entry.status = params.get("price"), params["quantity"], order.status
        return order.to_json()

    def _find(self, params: dict[str, str], missing: ErrorCode) -> VenueOrder:
        if params.get("orderId"):  # Binance: orderId first, then origClientOrderId must match it
            order = self.account.by_id(int(params["orderId"])) if params["orderId"].isdigit() else None
            if order is not None and params.get("origClientOrderId", order.client_order_id) != order.client_order_id:
                order = None
        else:
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
