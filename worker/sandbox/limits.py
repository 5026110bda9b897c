"""The sandbox's rate limits: Binance spot's published ones by default, on the venue's clock.

Binance spot (binance-spot-api-docs: `enums.md` "Rate limiters", `rest-api.md` "LIMITS" and
`GET /api/v3/rateLimit/order`, `faqs/order_count_decrement.md`):

* REQUEST_WEIGHT 6,000 per minute per IP; each endpoint has a weight (`WEIGHTS`).
* ORDERS (the *unfilled* order count) 50 per 10 s and 160,000 per day per account: every order
  placed adds one, an order's first fill takes one off again, cancels and expiries change nothing.
* Over a limit: HTTP 429 with `Retry-After` (seconds until the window ends), -1003 for weight,
  -1015 for orders. "Repeatedly violating rate limits and/or failing to back off after receiving
  429s will result in an automated IP ban (HTTP status 418)", "from 2 minutes to 3 days".

Binance does not publish the exact ban rule; the sandbox's is: after a weight 429, every request
that arrives before its Retry-After has passed is a violation; the `ban_after`-th violation (5)
bans the IP for `ban_s` (120 s), doubled for each later ban, at most 3 days. While banned, every
request gets 418 with `Retry-After` = the seconds left. The windows are fixed (a minute from
:00, ten seconds from :00, :10, ..., a day from 00:00 UTC), as Binance counts them.
"""

from __future__ import annotations

from dataclasses import dataclass

from worker.io.binance.protocol import ORDER_COUNT_HEADER, USED_WEIGHT_HEADER, ErrorCode

ORDER_COUNT_DAY_HEADER = "X-MBX-ORDER-COUNT-1D"
TOO_MANY_ORDERS = -1015
UNLIMITED = 1_000_000_000
_MAX_BAN_S = 3 * 24 * 3600

# Request weights of Binance spot's REST endpoints (rest-api.md, "Weight:").
WEIGHTS = {
    "ping": 1,
    "time": 1,
    "exchangeInfo": 20,
    "order:POST": 1,
    "order:GET": 4,
    "order:DELETE": 1,
    "cancelReplace": 1,
    "openOrders": 6,  # with a symbol
    "openOrders:all": 80,  # without one
    "account": 20,
    "bookTicker": 2,  # one symbol
    "bookTicker:all": 4,  # several or all
}


@dataclass(frozen=True)
class Limits:
    weight_per_minute: int = 6_000
    orders_per_10s: int = 50
    orders_per_day: int = 160_000
    ban_after: int = 5  # requests sent during a 429's Retry-After before the IP is banned
    ban_s: int = 120  # the first ban; doubled for each later one

    @classmethod
    def binance(cls) -> Limits:
        return cls()

    @classmethod
    def unlimited(cls) -> Limits:
        return cls(UNLIMITED, UNLIMITED, UNLIMITED)

    @classmethod
    def parse(cls, text: str) -> Limits:
        """`binance`, `unlimited`, or `W,O[,D]`: weight per minute, orders per 10 s (and per day)."""
        if text == "binance":
            return cls.binance()
        if text == "unlimited":
            return cls.unlimited()
        try:
            numbers = [int(part) for part in text.split(",")]
        except ValueError:
            numbers = []
        if len(numbers) not in (2, 3) or min(numbers) <= 0:
            raise ValueError(f"{text!r}: expected binance, unlimited or W,O[,D] (positive integers)")
        return cls(*numbers)


@dataclass(frozen=True)
class Refusal:
    status: int  # 429 or 418
    code: int
    msg: str
    retry_after_s: int


class _Window:
    """A counter over fixed windows of `size_ms` on the venue's clock."""

    def __init__(self, size_ms: int) -> None:
        self.size_ms = size_ms
        self._index = -1
        self._count = 0

    def count(self, now_ms: int) -> int:
        if now_ms // self.size_ms != self._index:
            self._index, self._count = now_ms // self.size_ms, 0
        return self._count

    def add(self, now_ms: int, amount: int) -> int:
        self._count = max(0, self.count(now_ms) + amount)
        return self._count

    def seconds_left(self, now_ms: int) -> int:
        return _ceil_s((now_ms // self.size_ms + 1) * self.size_ms - now_ms)


class RateLimiter:
    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._weight = _Window(60_000)
        self._orders_10s = _Window(10_000)
        self._orders_day = _Window(86_400_000)
        self._backoff_until_ms = 0
        self._violations = 0
        self._bans = 0
        self._banned_until_ms = 0
        self.refusals: dict[str, int] = {}  # "429:-1003", "429:-1015", "418:-1003" -> count
        self.weight_spent = 0  # every request's weight since the start, across windows (for tests)

    def admit(self, now_ms: int, weight: int) -> Refusal | None:
        """Spends a request's weight on its arrival; a refusal if over the limit or banned."""
        if now_ms < self._banned_until_ms:
            return self._refused(self._ban_refusal(now_ms))
        if now_ms >= self._backoff_until_ms:
            self._violations = 0
        self.weight_spent += weight
        used = self._weight.add(now_ms, weight)
        if used <= self.limits.weight_per_minute:
            return None
        if now_ms < self._backoff_until_ms:
            self._violations += 1
            if self._violations >= self.limits.ban_after:
                self._bans += 1
                duration_s = min(self.limits.ban_s * 2 ** (self._bans - 1), _MAX_BAN_S)
                self._banned_until_ms = now_ms + duration_s * 1000
                self._violations = 0
                return self._refused(self._ban_refusal(now_ms))
        self._backoff_until_ms = (now_ms // self._weight.size_ms + 1) * self._weight.size_ms
        limit = self.limits.weight_per_minute
        return self._refused(
            Refusal(
                429,
                ErrorCode.TOO_MANY_REQUESTS,
                f"Too much request weight used; current limit is {limit} request weight per 1 MINUTE. "
                "Please use WebSocket Streams for live updates to avoid polling the API.",
                self._weight.seconds_left(now_ms),
            )
        )

    def admit_order(self, now_ms: int) -> Refusal | None:
        """Checked when a new order is processed: the unfilled order count (10 s and day)."""
        for window, limit, name in (
            (self._orders_10s, self.limits.orders_per_10s, "TEN_SECONDS"),
            (self._orders_day, self.limits.orders_per_day, "DAY"),
        ):
            if window.count(now_ms) >= limit:
                message = f"Too many new orders; current limit is {limit} orders per {name}."
                return self._refused(Refusal(429, TOO_MANY_ORDERS, message, window.seconds_left(now_ms)))
        return None

    def order_placed(self, now_ms: int) -> None:
        self._orders_10s.add(now_ms, 1)
        self._orders_day.add(now_ms, 1)

    def order_filled(self, now_ms: int) -> None:
        """An order's first fill takes it off the unfilled order count (every window)."""
        self._orders_10s.add(now_ms, -1)
        self._orders_day.add(now_ms, -1)

    def headers(self, now_ms: int) -> dict[str, str]:
        return {
            USED_WEIGHT_HEADER: str(self._weight.count(now_ms)),
            ORDER_COUNT_HEADER: str(self._orders_10s.count(now_ms)),
            ORDER_COUNT_DAY_HEADER: str(self._orders_day.count(now_ms)),
        }

    def published(self) -> list[dict[str, object]]:
        """The `rateLimits` of exchangeInfo."""
        return [
            {
                "rateLimitType": "REQUEST_WEIGHT",
                "interval": "MINUTE",
                "intervalNum": 1,
                "limit": self.limits.weight_per_minute,
            },
            {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": self.limits.orders_per_10s},
            {"rateLimitType": "ORDERS", "interval": "DAY", "intervalNum": 1, "limit": self.limits.orders_per_day},
        ]

    def _ban_refusal(self, now_ms: int) -> Refusal:
        return Refusal(
            418,
            ErrorCode.TOO_MANY_REQUESTS,
            f"Way too much request weight used; IP banned until {self._banned_until_ms}. "
            "Please use WebSocket Streams for live updates to avoid bans.",
            _ceil_s(self._banned_until_ms - now_ms),
        )

    def _refused(self, refusal: Refusal) -> Refusal:
        key = f"{refusal.status}:{refusal.code}"
        self.refusals[key] = self.refusals.get(key, 0) + 1
        return refusal


def _ceil_s(ms: int) -> int:
    return max(1, -(-ms // 1000))
