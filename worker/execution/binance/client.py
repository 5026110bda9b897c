"""One signed HTTP call to a Binance-style venue, classified for the retry policy.

Every failure becomes one of three things the executor can act on safely:
  * `NotSent`         the venue never got the request (connect error, 429, 418): safe to resend;
  * `UnknownOutcome`  the request may have been processed (read timeout, dropped connection,
                      5xx, -1007): query by client order id before anything else;
  * `VenueRejected`   a definite answer (4xx with a Binance code): never retried.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from worker.execution.binance.protocol import (
    API_KEY_HEADER,
    ORDER_COUNT_HEADER,
    USED_WEIGHT_HEADER,
    ErrorCode,
    signed_query,
)

log = logging.getLogger(__name__)


class VenueError(Exception):
    pass


class NotSent(VenueError):
    def __init__(self, reason: str, retry_after_s: float = 0.0) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after_s = retry_after_s


class VenueBanned(NotSent):
    """HTTP 418: the venue banned this IP. Stop sending until `retry_after_s` has passed."""


class UnknownOutcome(VenueError):
    pass


class VenueRejected(VenueError):
    def __init__(self, code: int, msg: str) -> None:
        super().__init__(f"{code} {msg}")
        self.code = code
        self.msg = msg


@dataclass(frozen=True)
class VenueCredentials:
    api_key: str
    api_secret: str = field(repr=False)  # never printed, never logged

    def __repr__(self) -> str:
        return "VenueCredentials(api_key=<set>, api_secret=<set>)"


@dataclass
class RateBudget:
    """The venue's own counters from its last answer, and the limits we spend them against."""

    # Binance spot: 6,000 request weight per minute and 50 orders per 10 s per account. We stop
    # at 90% so that a burst from another process on the same key does not tip us over.
    weight_limit_1m: int = 6_000
    orders_limit_10s: int = 50
    headroom: float = 0.9
    used_weight_1m: int = 0
    orders_10s: int = 0
    observed_at: float = 0.0  # monotonic time of the last update

    def update(self, headers: Any) -> None:
        if USED_WEIGHT_HEADER in headers:
            self.used_weight_1m = int(headers[USED_WEIGHT_HEADER])
        if ORDER_COUNT_HEADER in headers:
            self.orders_10s = int(headers[ORDER_COUNT_HEADER])
        self.observed_at = time.monotonic()

    def wait_before_order_s(self) -> float:
        """How long to hold an order so as to stay inside the venue's limits (0 = send now)."""
        age = time.monotonic() - self.observed_at
        if self.orders_10s >= self.orders_limit_10s * self.headroom and age < 10:
            return 10 - age
        if self.used_weight_1m >= self.weight_limit_1m * self.headroom and age < 60:
            return 60 - age
        return 0.0


class BinanceClient:
    def __init__(
        self,
        base_url: str,
        credentials: VenueCredentials,
        timeout_s: float = 2.0,
        recv_window_ms: int = 5_000,
        budget: RateBudget | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._credentials = credentials
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._recv_window_ms = recv_window_ms
        self.budget = budget or RateBudget()
        self._session: aiohttp.ClientSession | None = None
        self._limits_loaded = False

    async def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout, headers={API_KEY_HEADER: self._credentials.api_key}
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def load_limits(self) -> None:
        """Takes the venue's published rate limits (exchangeInfo `rateLimits`) as the budget."""
        session = await self._http()
        try:
            async with session.get(f"{self.base_url}/api/v3/exchangeInfo") as response:
                info = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            log.warning("venue limits unknown (%s); assuming Binance spot defaults", exc)
            return
        for limit in info.get("rateLimits", []):
            kind, interval, number = limit.get("rateLimitType"), limit.get("interval"), limit.get("intervalNum")
            if kind == "ORDERS" and interval == "SECOND" and number == 10:
                self.budget.orders_limit_10s = int(limit["limit"])
            elif kind == "REQUEST_WEIGHT" and interval == "MINUTE" and number == 1:
                self.budget.weight_limit_1m = int(limit["limit"])
        self._limits_loaded = True

    async def call(self, method: str, path: str, params: dict[str, str]) -> dict[str, Any]:
        """One signed request; raises NotSent / UnknownOutcome / VenueRejected."""
        if not self._limits_loaded:
            self._limits_loaded = True
            await self.load_limits()
        if method != "GET" and (wait := self.budget.wait_before_order_s()) > 0:
            # Waiting for the venue's window is not a failed try: the order has not been sent.
            log.info("order rate budget spent; holding orders for %.1fs", wait)
            await asyncio.sleep(wait)
        signed = {
            **params,
            "recvWindow": str(self._recv_window_ms),
            "timestamp": str(time.time_ns() // 1_000_000),
        }
        url = f"{self.base_url}{path}?{signed_query(signed, self._credentials.api_secret)}"
        session = await self._http()
        try:
            async with session.request(method, url) as response:
                self.budget.update(response.headers)
                body = await response.json(content_type=None)
                status = response.status
                retry_after = float(response.headers.get("Retry-After", "0") or 0)
        except aiohttp.ClientConnectorError as exc:
            raise NotSent(f"cannot connect: {exc.os_error}") from None
        except (TimeoutError, aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError) as exc:
            raise UnknownOutcome(f"{type(exc).__name__} after sending") from None
        except aiohttp.ClientError as exc:
            raise UnknownOutcome(f"{type(exc).__name__}: {exc}") from None
        except ValueError:
            raise UnknownOutcome(f"unreadable answer (HTTP {status})") from None
        if status == 418:
            raise VenueBanned("HTTP 418: IP banned by the venue", retry_after_s=retry_after or 60.0)
        if status == 429:
            raise NotSent("HTTP 429: rate limited", retry_after_s=retry_after or 1.0)
        if status >= 500:
            raise UnknownOutcome(f"HTTP {status}: {body.get('msg', '')}")
        if status >= 400:
            code = int(body.get("code", 0))
            if code in (ErrorCode.TIMEOUT, ErrorCode.DISCONNECTED):
                raise UnknownOutcome(f"{code}: {body.get('msg', '')}")
            raise VenueRejected(code, str(body.get("msg", "")))
        return dict(body)
