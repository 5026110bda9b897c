"""The live executor: orders to a Binance-style REST venue (Binance, its testnet, the sandbox).

It sends what the engine decided and reports what the venue said; it never decides to send an
order again. The rule that keeps an order from being placed twice (guarantee 2) lives in the
engine and docs/guarantees.md; this module's part is:

  * an order request is signed with its intent's committed `timestamp` and `recvWindow`, so
    every copy of it expires at a known venue time, and it is never signed after that;
  * it is tried again (at most `max_tries`, exponential backoff with jitter, `Retry-After`
    honoured) only when the venue certainly did not process it (connect error, 429);
  * any other failure is UNKNOWN: one query may find the order at once; otherwise nothing is
    done until every copy has expired, and then the engine's reconciliation decides;
  * venue rejections and local validation failures are final; after HTTP 418 nothing at all is
    sent until the ban expires (the client enforces that for every request).
"""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import Any

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt
from tenacity.wait import wait_random_exponential

from worker.contract.enums import ExecutorKind, OrderStatus, OrderType
from worker.contract.orders import AmendResult, CancelResult, ExecResult, OrderCtx
from worker.core.venue_filters import VenueFilters
from worker.io.binance.client import (
    BinanceClient,
    NotSent,
    RequestExpired,
    UnknownOutcome,
    VenueBanned,
    VenueError,
    VenueRejected,
)
from worker.io.binance.protocol import VENUE_STATUS, ErrorCode

log = logging.getLogger(__name__)

ORDER_PATH = "/api/v3/order"


def _not_processed(error: BaseException) -> bool:
    """Only a request the venue certainly never processed is sent again (same timestamp)."""
    return isinstance(error, NotSent) and not isinstance(error, (VenueBanned, RequestExpired))


def _repeat_safe(error: BaseException) -> bool:
    """Queries and cancels are idempotent: repeated after any transport failure."""
    return isinstance(error, (NotSent, UnknownOutcome)) and not isinstance(error, (VenueBanned, RequestExpired))


def _wait(base: wait_random_exponential) -> Any:
    def wait(state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        retry_after = error.retry_after_s if isinstance(error, NotSent) else 0.0
        return max(retry_after, base(state))

    return wait


class BinanceExecutor:
    name = ExecutorKind.BINANCE.value
    requires_intent = True  # side effects outside Kafka: commit the intent before sending
    supports_amend = False  # cancel-replace under a new id is not modelled: amends are refused

    def __init__(
        self,
        client: BinanceClient,
        max_tries: int = 3,
        backoff_s: float = 0.05,
        max_backoff_s: float = 1.0,
        venue_name: str = ExecutorKind.BINANCE.value,
    ) -> None:
        self.client = client
        self.clock = client.clock  # the venue's clock: intents are stamped with it
        self.recv_window_ms = client.recv_window_ms
        self._max_tries = max_tries
        # Exponential backoff with full jitter from 50 ms: a second try lands before a human
        # would notice, the third within ~1 s; longer waits only when the venue says so.
        self._backoff = wait_random_exponential(multiplier=backoff_s, max=max_backoff_s)
        self.name = venue_name

    async def start(self) -> None:
        """Measures the venue's clock and loads its limits and filters before the first intent."""
        await self.client.start()

    @property
    def venue_filters(self) -> dict[str, VenueFilters] | None:
        return self.client.venue_filters

    @property
    def venue_answered(self) -> bool:
        """Whether the venue answered exchangeInfo (a start while it is down asks again)."""
        return self.client.limits_loaded

    # -- IExecutor ------------------------------------------------------------------------------

    async def submit(self, order: OrderCtx) -> ExecResult:
        assert order.sent_ts_ms is not None and order.recv_window_ms is not None, "a live order needs its intent"
        sent = order.sent_ts_ms
        timing: list[int] = []
        try:
            body = await self._retrying(
                _not_processed, "POST", _order_params(order), sent, order.recv_window_ms, timing=timing
            )
        except VenueBanned:
            return self._result(OrderStatus.REJECTED, sent, reason="venue_banned")
        except RequestExpired:
            # Never sent: the engine resends it as a new intent once the venue confirms, after
            # the expiry, that it does not have it (the uniform path for every unsent intent).
            return self._result(OrderStatus.UNKNOWN, sent, reason="expired_before_send")
        except NotSent as exc:
            return self._result(OrderStatus.REJECTED, sent, reason=f"not_sent:{exc.reason}")
        except VenueRejected as exc:
            if exc.code == ErrorCode.NEW_ORDER_REJECTED and "Duplicate" in exc.msg:
                # An earlier copy of ours got through and is open: report what the venue has.
                return await self._look_up(order, sent, "duplicate")
            if exc.code == ErrorCode.INVALID_TIMESTAMP:
                # Refused for its timestamp (our clock estimate was off): measured again, and the
                # order is resolved after its expiry like any other unknown.
                return self._result(OrderStatus.UNKNOWN, sent, reason=f"venue:{exc.code}")
            return self._result(OrderStatus.REJECTED, sent, reason=f"venue:{exc.code}:{exc.msg}")
        except UnknownOutcome as exc:
            log.warning("order %s: outcome unknown (%s)", order.client_order_id, exc)
            return await self._look_up(order, sent, "unknown_outcome")
        return self._from_venue(body, sent).model_copy(update={"round_trip_ms": timing[-1] if timing else None})

    async def query(self, client_order_id: str, symbol: str) -> ExecResult | None:
        """The venue's view of an order, or None when the venue has no such order."""
        try:
            body = await self._retrying(_repeat_safe, "GET", {"symbol": symbol, "origClientOrderId": client_order_id})
        except VenueRejected as exc:
            if exc.code == ErrorCode.NO_SUCH_ORDER:
                return None
            raise
        return self._from_venue(body, None)

    async def open_orders(self, symbol: str) -> dict[str, ExecResult]:
        """Every open order of `symbol` at the venue, by client order id (one request, weight 6)."""
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self._max_tries),
            wait=_wait(self._backoff),
            retry=retry_if_exception(_repeat_safe),
            reraise=True,
        )
        orders: list[Any] = []
        async for attempt in retrying:
            with attempt:
                orders = await self.client.call_list("/api/v3/openOrders", {"symbol": symbol})
        result: dict[str, ExecResult] = {}
        for entry in orders:
            if isinstance(entry, dict) and isinstance(entry.get("clientOrderId"), str):
                result[entry["clientOrderId"]] = self._from_venue(entry, None)
        return result

    async def cancel(self, client_order_id: str, symbol: str | None = None) -> CancelResult:
        """CANCELED, REJECTED with the venue's reason, or PENDING_CANCEL when the outcome is unknown."""
        if symbol is None:
            return CancelResult(client_order_id=client_order_id, status=OrderStatus.REJECTED, reason="unknown_symbol")
        try:
            body = await self._retrying(
                _repeat_safe, "DELETE", {"symbol": symbol, "origClientOrderId": client_order_id}
            )
        except VenueRejected as exc:
            return CancelResult(
                client_order_id=client_order_id,
                status=OrderStatus.REJECTED,
                reason=f"venue:{exc.code}:{exc.msg}",
                ack_ts_ms=self.clock.now_ms(),
            )
        except VenueError as exc:
            return CancelResult(
                client_order_id=client_order_id, status=OrderStatus.PENDING_CANCEL, reason=f"unknown_outcome:{exc}"
            )
        return CancelResult(
            client_order_id=client_order_id,
            status=VENUE_STATUS.get(str(body.get("status")), OrderStatus.CANCELED),
            ack_ts_ms=_int(body.get("transactTime")) or self.clock.now_ms(),
        )

    async def amend(self, client_order_id: str, new_px: Decimal | None, new_qty: Decimal | None) -> AmendResult:
        # Binance amends by cancel-replace under a new client order id; refused (with an event).
        return AmendResult(client_order_id=client_order_id, status=OrderStatus.REJECTED, reason="amend_unsupported")

    async def flush(self) -> None:
        return None

    async def close(self) -> None:
        await self.client.close()

    # -- internals -------------------------------------------------------------------------------

    async def _look_up(self, order: OrderCtx, sent: int, why: str) -> ExecResult:
        """One query after an unknown outcome: the order if the venue has it, else UNKNOWN.

        "Not found" proves nothing yet (a copy may still be on its way), so it is not acted on.
        """
        try:
            known = await self.query(order.client_order_id, order.symbol)
        except VenueError as exc:
            log.info("order %s: query after %s failed (%s)", order.client_order_id, why, exc)
            known = None
        if known is None:
            return self._result(OrderStatus.UNKNOWN, sent, reason=why)
        return known.model_copy(update={"sent_ts_ms": sent})

    async def _retrying(
        self,
        retry_on: Any,
        method: str,
        params: dict[str, str],
        timestamp_ms: int | None = None,
        recv_window_ms: int | None = None,
        path: str = ORDER_PATH,
        timing: list[int] | None = None,
    ) -> dict[str, Any]:
        """The request, retried on `retry_on`; `timing` gets the round trip (ms) of the try that
        was answered, so that latency excludes the backoff between tries."""
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self._max_tries),
            wait=_wait(self._backoff),
            retry=retry_if_exception(retry_on),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                started = self.clock.local_ms()
                body = await self.client.call(method, path, params, timestamp_ms, recv_window_ms)
                if timing is not None:
                    timing.append(self.clock.local_ms() - started)
                return body
        raise AssertionError("unreachable: tenacity either returns or raises")

    def _from_venue(self, body: dict[str, Any], sent_ts_ms: int | None) -> ExecResult:
        status = VENUE_STATUS.get(str(body.get("status")), OrderStatus.UNKNOWN)
        executed = _decimal(body.get("executedQty"))
        quote = _decimal(body.get("cummulativeQuoteQty"))
        price = _decimal(body.get("price"))
        # The venue's own time of the event (transactTime / updateTime), else our estimate of it.
        ack = _int(body.get("transactTime")) or _int(body.get("updateTime")) or self.clock.now_ms()
        return ExecResult(
            status=status,
            exchange_order_id=str(body.get("orderId")) if body.get("orderId") is not None else None,
            px_sent=price.normalize() if price > 0 else None,
            px_fill=(quote / executed).normalize() if executed > 0 else None,
            qty_filled=executed.normalize(),
            sent_ts_ms=sent_ts_ms,
            ack_ts_ms=ack,
        )

    def _result(self, status: OrderStatus, sent_ts_ms: int, reason: str) -> ExecResult:
        return ExecResult(status=status, reason=reason, sent_ts_ms=sent_ts_ms, ack_ts_ms=self.clock.now_ms())


def _order_params(order: OrderCtx) -> dict[str, str]:
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
    return params


def _decimal(value: object) -> Decimal:
    try:
        result = Decimal(str(value)) if value is not None else Decimal(0)
    except ArithmeticError:
        return Decimal(0)
    return result if result.is_finite() and result >= 0 else Decimal(0)


def _int(value: object) -> int | None:
    try:
        return int(value)  # type: ignore[call-overload,no-any-return]
    except (TypeError, ValueError):
        return None
