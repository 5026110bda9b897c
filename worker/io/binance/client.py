"""One signed HTTP call to a Binance-style venue, classified for the retry policy.

Every failure becomes one of these, which the executor can act on safely:
  * `NotSent`         the venue never processed the request (connect error, 429, 418, a request
                      that expired before it could be sent): safe to send again while unexpired;
  * `UnknownOutcome`  the request may have been processed (read timeout, dropped connection,
                      5xx, -1007, an answer that is not the expected JSON): resolved by a query
                      once every copy of the request has expired (docs/guarantees.md);
  * `VenueRejected`   a definite answer (4xx with a Binance code): never retried.

Every request that can create an order is signed with the `timestamp` and `recvWindow` its
intent committed, so all its copies expire at one known time on the venue's clock. The venue's
clock is measured (`/api/v3/time`) rather than assumed to be ours.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from worker.core.venue_filters import VenueFilters, VenueFiltersError, parse_exchange_info
from worker.io.binance.clock import VenueClock
from worker.io.binance.protocol import (
    API_KEY_HEADER,
    ORDER_COUNT_HEADER,
    USED_WEIGHT_HEADER,
    ErrorCode,
    signed_query,
)
from worker.policy.clock import TimeProvider, WallClock

log = logging.getLogger(__name__)

# Request weights of the Binance spot endpoints this client calls (published in the API docs).
WEIGHTS = {
    ("POST", "/api/v3/order"): 1,
    ("GET", "/api/v3/order"): 4,
    ("DELETE", "/api/v3/order"): 1,
    ("GET", "/api/v3/openOrders"): 6,  # with a symbol; 80 without (never used here)
    ("GET", "/api/v3/exchangeInfo"): 20,
    ("GET", "/api/v3/time"): 1,
}
# The venue's clock is measured again this often, and at once after a -1021.
CLOCK_REFRESH_S = 60.0


class VenueError(Exception):
    pass


class NotSent(VenueError):
    def __init__(self, reason: str, retry_after_s: float = 0.0) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after_s = retry_after_s


class VenueBanned(NotSent):
    """HTTP 418: the venue banned this IP. Nothing is sent until `retry_after_s` has passed."""


class RequestExpired(NotSent):
    """The request's own expiry has passed (or is too close) on the venue's clock: never signed."""


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
        try:
            if USED_WEIGHT_HEADER in headers:
                self.used_weight_1m = int(headers[USED_WEIGHT_HEADER])
            if ORDER_COUNT_HEADER in headers:
                self.orders_10s = int(headers[ORDER_COUNT_HEADER])
        except ValueError:
            return  # a proxy's page, not the venue's headers
        self.observed_at = time.monotonic()

    def wait_s(self, weight: int, is_order: bool) -> float:
        """How long to hold a request so as to stay inside the venue's limits (0 = send now).

        Every request spends weight, queries and cancels too: a reconciliation loop that
        ignores its GETs is what earns a 429 and then a 418 ban.
        """
        age = time.monotonic() - self.observed_at
        if is_order and self.orders_10s + 1 > self.orders_limit_10s * self.headroom and age < 10:
            return 10 - age
        if self.used_weight_1m + weight > self.weight_limit_1m * self.headroom and age < 60:
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
        local_clock: TimeProvider | None = None,
        clock_safety_ms: int | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._credentials = credentials
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.recv_window_ms = recv_window_ms
        self.budget = budget or RateBudget()
        self.clock = VenueClock(local_clock or WallClock(), *(() if clock_safety_ms is None else (clock_safety_ms,)))
        self._session: aiohttp.ClientSession | None = None
        # Whether exchangeInfo answered; until it does, every start() asks again.
        self.limits_loaded = False
        self._clock_checked_at: float | None = None
        self._banned_until = 0.0  # monotonic; after a 418 no request of any kind goes out
        self.used_weight = 0  # weight this client spent, by the published weights (a metric)
        # Per symbol, the venue's price/quantity grid from exchangeInfo (None until loaded).
        self.venue_filters: dict[str, VenueFilters] | None = None

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

    @property
    def banned_for_s(self) -> float:
        return max(0.0, self._banned_until - time.monotonic())

    async def start(self) -> None:
        """The venue's limits and clock, before the first order (both retried lazily if down)."""
        if not self.limits_loaded:
            await self.load_limits()
        if self._clock_checked_at is None or time.monotonic() - self._clock_checked_at > CLOCK_REFRESH_S:
            await self.sync_clock()

    async def load_limits(self) -> None:
        """Takes the venue's published rate limits (exchangeInfo `rateLimits`) as the budget, and
        its symbols' filters (one request, weight 20)."""
        try:
            info = await self._public("GET", "/api/v3/exchangeInfo")
        except VenueError as exc:
            log.warning("venue limits unknown (%s); assuming Binance spot defaults", exc)
            return
        self.limits_loaded = True
        try:
            self.venue_filters = parse_exchange_info(info)
        except VenueFiltersError as exc:
            log.warning("venue filters unreadable (%s)", exc)
        for limit in info.get("rateLimits", []):
            if not isinstance(limit, dict):
                continue
            kind, interval, number = limit.get("rateLimitType"), limit.get("interval"), limit.get("intervalNum")
            if kind == "ORDERS" and interval == "SECOND" and number == 10:
                self.budget.orders_limit_10s = int(limit["limit"])
            elif kind == "REQUEST_WEIGHT" and interval == "MINUTE" and number == 1:
                self.budget.weight_limit_1m = int(limit["limit"])

    async def sync_clock(self) -> None:
        """Measures the venue's clock offset from `/api/v3/time` (error: half the round trip)."""
        self._clock_checked_at = time.monotonic()
        before = self.clock.local_ms()
        try:
            body = await self._public("GET", "/api/v3/time")
            server_ms = int(body["serverTime"])
        except (VenueError, KeyError, TypeError, ValueError) as exc:
            log.warning("venue clock not measured (%s); keeping offset %d ms", exc, self.clock.offset_ms)
            return
        self.clock.observe(server_ms, before, self.clock.local_ms())
        log.info("venue clock offset %+d ms (±%d ms)", self.clock.offset_ms, self.clock.uncertainty_ms)

    def clock_suspect(self) -> None:
        """The venue refused a timestamp (-1021): measure its clock again before the next request."""
        self._clock_checked_at = None

    async def call(
        self,
        method: str,
        path: str,
        params: dict[str, str],
        timestamp_ms: int | None = None,
        recv_window_ms: int | None = None,
    ) -> dict[str, Any]:
        """One signed request; raises NotSent / UnknownOutcome / VenueRejected.

        With `timestamp_ms` (an intent's), the request is signed with that timestamp and window,
        and refused here if its expiry has passed on the venue's clock by the time it would go
        out: a late request must never be the one the venue accepts after our wait.
        """
        await self.start()
        weight = WEIGHTS.get((method, path), 1)
        is_order = method == "POST"
        if (wait := self.budget.wait_s(weight, is_order)) > 0:
            # Waiting for the venue's window is not a failed try: nothing has been sent.
            log.info("venue rate budget spent; holding %s %s for %.1fs", method, path, wait)
            await asyncio.sleep(wait)
        window = recv_window_ms if recv_window_ms is not None else self.recv_window_ms
        timestamp = timestamp_ms if timestamp_ms is not None else self.clock.now_ms()
        if timestamp_ms is not None and not self.clock.before(timestamp + window):
            raise RequestExpired(f"request expired at venue time {timestamp + window} before it was sent")
        signed = {**params, "recvWindow": str(window), "timestamp": str(timestamp)}
        body = await self._send(method, path, signed_query(signed, self._credentials.api_secret), weight)
        if not isinstance(body, dict):
            raise UnknownOutcome(f"HTTP 200: expected a JSON object from {path}")
        return body

    async def call_list(self, path: str, params: dict[str, str]) -> list[Any]:
        """A signed GET whose answer is a JSON array (openOrders)."""
        await self.start()
        weight = WEIGHTS.get(("GET", path), 1)
        if (wait := self.budget.wait_s(weight, False)) > 0:
            await asyncio.sleep(wait)
        signed = {**params, "recvWindow": str(self.recv_window_ms), "timestamp": str(self.clock.now_ms())}
        body = await self._send("GET", path, signed_query(signed, self._credentials.api_secret), weight)
        if not isinstance(body, list):
            raise UnknownOutcome(f"HTTP 200: expected a JSON array from {path}")
        return body

    async def _public(self, method: str, path: str) -> dict[str, Any]:
        body = await self._send(method, path, "", WEIGHTS.get((method, path), 1))
        if not isinstance(body, dict):
            raise UnknownOutcome(f"HTTP 200: expected a JSON object from {path}")
        return body

    async def _send(self, method: str, path: str, query: str, weight: int) -> dict[str, Any] | list[Any]:
        if (banned := self.banned_for_s) > 0:
            raise VenueBanned(f"banned by the venue (HTTP 418) for {banned:.0f}s more", retry_after_s=banned)
        url = f"{self.base_url}{path}" + (f"?{query}" if query else "")
        session = await self._http()
        self.used_weight += weight
        try:
            async with session.request(method, url) as response:
                status = response.status
                self.budget.update(response.headers)
                retry_after = _seconds(response.headers.get("Retry-After"))
                raw = await response.read()
        except aiohttp.ClientConnectorError as exc:
            raise NotSent(f"cannot connect: {exc.os_error}") from None
        except (TimeoutError, aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError) as exc:
            raise UnknownOutcome(f"{type(exc).__name__} after sending") from None
        except aiohttp.ClientError as exc:
            raise UnknownOutcome(f"{type(exc).__name__}: {exc}") from None
        if status == 418:
            self._banned_until = time.monotonic() + (retry_after or 60.0)
            raise VenueBanned("HTTP 418: IP banned by the venue", retry_after_s=retry_after or 60.0)
        if status == 429:
            raise NotSent("HTTP 429: rate limited", retry_after_s=retry_after or 1.0)
        parsed = _json(raw)
        body = parsed if isinstance(parsed, dict) else None
        if status < 400 and isinstance(parsed, list):
            return parsed
        if status >= 500:
            raise UnknownOutcome(f"HTTP {status}" + (f": {body.get('msg', '')}" if body else " (no venue answer)"))
        if body is None:
            # An HTML error page, an empty body, a JSON array: not the venue's answer. Whatever
            # produced it (a proxy, a WAF, a half-deployed gateway), the request may have been
            # processed behind it.
            raise UnknownOutcome(f"HTTP {status}: not a venue answer ({len(raw)} bytes)")
        if status >= 400:
            code = _int(body.get("code"))
            if code in (ErrorCode.TIMEOUT, ErrorCode.DISCONNECTED) or code is None:
                raise UnknownOutcome(f"HTTP {status} {code}: {body.get('msg', '')}")
            if code == ErrorCode.INVALID_TIMESTAMP:
                self.clock_suspect()
            raise VenueRejected(code, str(body.get("msg", "")))
        return body


def _json(raw: bytes) -> object:
    try:
        return orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        return None


def _seconds(value: str | None) -> float:
    try:
        return max(0.0, float(value)) if value else 0.0
    except ValueError:
        return 0.0


def _int(value: object) -> int | None:
    try:
        return int(value)  # type: ignore[call-overload,no-any-return]
    except (TypeError, ValueError):
        return None
