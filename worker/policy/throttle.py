"""Token buckets on simulated time: per-symbol and global order-rate walls.

Time is the command's own `event_ts_ms`, never the wall clock, so a replay throttles exactly the
same orders as the live run did. Over-limit commands are refused (THROTTLED with a reason), not
queued: a queue would turn a burst into stale orders sent late, and hide the overload upstream.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class TokenBucket:
    rate_per_s: float  # refill rate; 0 disables the bucket (always admits)
    burst: float  # capacity: how many orders may go at once after a quiet spell
    tokens: float = -1.0  # -1: not started (full on first use)
    last_ms: int | None = None

    def take(self, now_ms: int) -> bool:
        if self.rate_per_s <= 0:
            return True
        if self.last_ms is None or self.tokens < 0:
            self.tokens, self.last_ms = self.burst, now_ms
        elif now_ms > self.last_ms:  # time never runs backwards for a bucket
            self.tokens = min(self.burst, self.tokens + (now_ms - self.last_ms) * self.rate_per_s / 1000)
            self.last_ms = now_ms
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


@dataclass(frozen=True)
class RateLimits:
    per_symbol_per_s: float
    global_per_s: float
    burst_s: float = 1.0  # bucket capacity in seconds of rate


@dataclass
class OrderRateWall:
    """Admits an order if both its symbol's bucket and the global bucket have a token.

    `factor` (0 < factor <= 1) scales every rate: the adaptive part. It is the product of what
    upstream gate statistics, market activity (through the mode) and harvester health say.
    """

    limits: RateLimits
    factor: float = 1.0
    symbol_factor: dict[str, float] = field(default_factory=dict)  # e.g. from harvester health
    _symbols: dict[str, TokenBucket] = field(default_factory=dict)
    _global: TokenBucket | None = None

    def configure(self, limits: RateLimits, factor: float) -> None:
        """New limits take effect at once (a mode switch); buckets keep their tokens, capped."""
        self.limits, self.factor = limits, max(0.0, min(1.0, factor))
        for symbol, bucket in self._symbols.items():
            self._shape(bucket, limits.per_symbol_per_s * self.symbol_factor.get(symbol, 1.0))
        if self._global is not None:
            self._shape(self._global, limits.global_per_s)

    def tighten_symbol(self, symbol: str, factor: float) -> None:
        """Scales one symbol's rate (0 < factor <= 1) from now on."""
        self.symbol_factor[symbol] = max(0.0, min(1.0, factor))
        bucket = self._symbols.get(symbol)
        if bucket is not None:
            self._shape(bucket, self.limits.per_symbol_per_s * self.symbol_factor[symbol])

    def admit(self, symbol: str, now_ms: int) -> str | None:
        """None if the order may go, else the reason it is throttled."""
        bucket = self._symbols.get(symbol)
        if bucket is None:
            rate = self.limits.per_symbol_per_s * self.symbol_factor.get(symbol, 1.0)
            bucket = self._symbols[symbol] = self._shape(TokenBucket(0, 0), rate)
        if self._global is None:
            self._global = self._shape(TokenBucket(0, 0), self.limits.global_per_s)
        # Check the symbol first, and take from the global bucket only if the symbol admits:
        # a throttled order must not spend the other symbols' shared budget.
        if not bucket.take(now_ms):
            return "rate_symbol"
        if not self._global.take(now_ms):
            return "rate_global"
        return None

    def _shape(self, bucket: TokenBucket, rate: float) -> TokenBucket:
        bucket.rate_per_s = rate * self.factor
        bucket.burst = max(1.0, bucket.rate_per_s * self.limits.burst_s)
        if bucket.tokens > bucket.burst:
            bucket.tokens = bucket.burst
        return bucket


def adaptive_factor(gate_reason_stats: dict[str, int], window_total: int, floor: float = 0.2) -> float:
    """Rate factor from upstream gate statistics: the share of rows upstream gated out.

    If upstream gated 30% of its rows recently, the market is unusual and the wall tightens to
    70% of its rate; never below `floor`, so a noisy upstream cannot stop trading by itself
    (its guards do that, explicitly).
    """
    if window_total <= 0:
        return 1.0
    gated = sum(gate_reason_stats.values())
    return max(floor, 1.0 - min(1.0, gated / window_total))
