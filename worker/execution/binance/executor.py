"""The live executor: orders to a Binance-style REST venue (Binance, its testnet, the sandbox).

The rule that keeps an order from ever being placed twice (guarantee 2): a request whose outcome
is unknown (timeout, dropped connection, 5xx, -1007) is followed by a query by client order id,
and the order is sent again only if the venue answers "does not exist" (-2013). Retries (at most
`max_tries` sends, exponential backoff with jitter, `Retry-After` honoured) happen only when the
order certainly did not reach the venue, or the venue says it does not have it. Venue rejections
and local validation failures are final. After HTTP 418 nothing is sent until the ban expires.
"""

from __future__ import annotations

import logging
import time
from decimal import Decimal
from typing import Any

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt
from tenacity.wait import wait_random_exponential

from worker.contract.enums import ExecutorKind, OrderStatus, OrderType
from worker.contract.orders import AmendResult, CancelResult, ExecResult, OrderCtx
from worker.execution.binance.client import (
    BinanceClient,
    NotSent,
    UnknownOutcome,
    VenueBanned,
    VenueRejected,
)
from worker.execution.binance.protocol import VENUE_STATUS, ErrorCode
from worker.policy.clock import TimeProvider

log = logging.getLogger(__name__)


class _ResendAllowed(Exception):
    """The venue confirmed it has no order with this id after an unknown outcome."""


class _Unresolved(Exception):
    """The outcome stays unknown: the order may or may not exist at the venue."""


def _resend_safe(error: BaseException) -> bool:
    """An order may be sent (again) only if it certainly is not at the venue."""
    return isinstance(error, (NotSent, _ResendAllowed)) and not isinstance(error, VenueBanned)


def _repeat_safe(error: BaseException) -> bool:
    """Queries and cancels may be repeated after any transport failure."""
    return isinstance(error, (NotSent, UnknownOutcome)) and not isinstance(error, VenueBanned)


def _wait(base: wait_random_exponential) -> Any:
    def wait(state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        retry_after = error.retry_after_s if isinstance(error, NotSent) else 0.0
        return max(retry_after, base(state))

    return wait


class BinanceExecutor:
    name = ExecutorKind.BINANCE.value
    requires_intent = True  # side effects outside Kafka: commit the intent before sending

    def __init__(
        self,
        client: BinanceClient,
        clock: TimeProvider,
        max_tries: int = 3,
        backoff_s: float = 0.05,
        max_backoff_s: float = 1.0,
        venue_name: str = ExecutorKind.BINANCE.value,
    ) -> None:
        self.client = client
        self._clock = clock
        self._max_tries = max_tries
        # Exponential backoff with full jitter from 50 ms: a second try lands before a human
        # would notice, the third within ~1 s; longer waits only when the venue says so.
        self._backoff = wait_random_exponential(multiplier=backoff_s, max=max_backoff_s)
        self._banned_until = 0.0
        self.name = venue_name
        # The REST API addresses an order by (symbol, client order id); the protocol passes the
        # id alone. Learned from every submit and query (reconciliation queries every open order).
        self._symbols: dict[str, str] = {}

    # -- IExecutor ------------------------------------------------------------------------------

    async def submit(self, order: OrderCtx) -> ExecResult:
        sent_ts_ms = self._clock.now_ms()
        self._symbols[order.client_order_id] = order.symbol
        if time.monotonic() < self._banned_until:
            return self._result(OrderStatus.REJECTED, sent_ts_ms, reason="venue_banned")
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self._max_tries),
            wait=_wait(self._backoff),
            retry=retry_if_exception(_resend_safe),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    return await self._send_once(order, sent_ts_ms)
        except VenueBanned as exc:
            self._banned_until = time.monotonic() + exc.retry_after_s
            log.error("venue banned this client (HTTP 418): no orders for %.0fs", exc.retry_after_s)
            return self._result(OrderStatus.REJECTED, sent_ts_ms, reason="venue_banned")
        except NotSent as exc:
            return self._result(OrderStatus.REJECTED, sent_ts_ms, reason=f"not_sent:{exc.reason}")
        except _ResendAllowed:
            return self._result(OrderStatus.REJECTED, sent_ts_ms, reason="not_at_venue_after_retries")
        except _Unresolved:
            # Non-terminal: the order may exist. Reconciliation asks the venue again later.
            return self._result(OrderStatus.SUBMITTED, sent_ts_ms, reason="unknown_outcome")
        raise AssertionError("unreachable: tenacity either returns or raises")

    async def query(self, client_order_id: str, symbol: str) -> ExecResult | None:
        """The venue's view of an order, or None when the venue has no such order."""
        self._symbols[client_order_id] = symbol
        try:
            body = await self._call_with_retries("GET", {"symbol": symbol, "origClientOrderId": client_order_id})
        except VenueRejected as exc:
            if exc.code == ErrorCode.NO_SUCH_ORDER:
                return None
            raise
        return self._from_venue(body, self._clock.now_ms())

    async def cancel(self, client_order_id: str) -> CancelResult:
        now = self._clock.now_ms()
        symbol = self._symbols.get(client_order_id)
        if symbol is None:
            return CancelResult(client_order_id=client_order_id, status=OrderStatus.REJECTED, reason="unknown_order")
        try:
            body = await self._call_with_retries("DELETE", {"symbol": symbol, "origClientOrderId": client_order_id})
        except VenueRejected as exc:
            return CancelResult(
                client_order_id=client_order_id,
                status=OrderStatus.REJECTED,
                reason=f"venue:{exc.code}:{exc.msg}",
            )
        except (NotSent, UnknownOutcome) as exc:
            return CancelResult(client_order_id=client_order_id, status=OrderStatus.REJECTED, reason=str(exc))
        return CancelResult(
            client_order_id=client_order_id,
            status=VENUE_STATUS.get(str(body.get("status")), OrderStatus.CANCELED),
            ack_ts_ms=now,
        )

    async def amend(self, client_order_id: str, new_px: Decimal | None, new_qty: Decimal | None) -> AmendResult:
        # Binance amends by cancel-replace under a new client order id, which would break the
        # one-id-per-order rule here; amends are refused until that is modelled.
        return AmendResult(client_order_id=client_order_id, status=OrderStatus.REJECTED, reason="amend_unsupported")

    async def flush(self) -> None:
        return None

    async def close(self) -> None:
        await self.client.close()

    # -- internals -------------------------------------------------------------------------------

    async def _send_once(self, order: OrderCtx, sent_ts_ms: int) -> ExecResult:
        params = {
            "symbol": order.symbol,
            "side": order.side.value,
            "type": order.order_type.value,
            "quantity": format(order.qty, "f"),
            "newClientOrderId": order.client_order_id,
            "newOrderRespType": "FULL",
        }
        if order.order_type is OrderType.LIMIT and order.px is not None:
            params["price"] = format(order.px, "f")
            params["timeInForce"] = order.tif.value
        try:
            body = await self.client.call("POST", "/api/v3/order", params)
        except VenueRejected as exc:
            if exc.code == ErrorCode.NEW_ORDER_REJECTED and "Duplicate" in exc.msg:
                # Our own earlier try got through: the venue has it. Report what it has.
                known = await self._resolve(order)
                if known is not None:
                    return known
            return self._result(OrderStatus.REJECTED, sent_ts_ms, reason=f"venue:{exc.code}:{exc.msg}")
        except UnknownOutcome as exc:
            log.warning("order %s: outcome unknown (%s); querying before any resend", order.client_order_id, exc)
            known = await self._resolve(order)
            if known is None:
                raise _ResendAllowed() from None
            return known
        return self._from_venue(body, sent_ts_ms)

    async def _resolve(self, order: OrderCtx) -> ExecResult | None:
        """Query after an unknown outcome: the venue's order, None if absent, else _Unresolved."""
        try:
            return await self.query(order.client_order_id, order.symbol)
        except (NotSent, UnknownOutcome, VenueRejected) as exc:
            raise _Unresolved(str(exc)) from None

    async def _call_with_retries(self, method: str, params: dict[str, str]) -> dict[str, Any]:
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self._max_tries),
            wait=_wait(self._backoff),
            retry=retry_if_exception(_repeat_safe),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                return await self.client.call(method, "/api/v3/order", params)
        raise AssertionError("unreachable")

    def _from_venue(self, body: dict[str, Any], sent_ts_ms: int) -> ExecResult:
        status = VENUE_STATUS.get(str(body.get("status")), OrderStatus.SUBMITTED)
        executed = Decimal(str(body.get("executedQty", "0")))
        quote = Decimal(str(body.get("cummulativeQuoteQty", "0")))
        price = Decimal(str(body.get("price", "0")))
        return ExecResult(
            status=status,
            exchange_order_id=str(body.get("orderId")),
            px_sent=price.normalize() if price > 0 else None,
            px_fill=(quote / executed).normalize() if executed > 0 else None,
            qty_filled=executed.normalize(),
            sent_ts_ms=sent_ts_ms,
            ack_ts_ms=self._clock.now_ms(),
        )

    def _result(self, status: OrderStatus, sent_ts_ms: int, reason: str) -> ExecResult:
        return ExecResult(status=status, reason=reason, sent_ts_ms=sent_ts_ms, ack_ts_ms=self._clock.now_ms())
