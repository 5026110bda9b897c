"""A seeded latency model for simulated venues: the same order always gets the same latency.

The draw is exponential, computed in integers against a table of thresholds built once with
Decimal arithmetic, not with `math.log`: a C library may round a logarithm differently in the
last bit, and a truncation to whole milliseconds can turn that into a different latency, so a
float path would make a backtest's digest depend on the host.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from decimal import Context, Decimal

from worker.policy.rng import Rng

# Thresholds carry 40 significant digits: far more than the 20 of a 64-bit draw.
_TABLE_CONTEXT = Context(prec=40)
_DRAW_SPACE = 2**64
# The table has ~44 x mean entries; a minute of mean extra latency is far beyond any venue.
_MAX_MEAN_MS = 60_000


@dataclass(frozen=True)
class LatencyModel:
    # A fixed floor (network round trip to a co-located venue gateway) plus an exponential tail,
    # the usual shape of measured REST order acknowledgements. Defaults are a rough spot-REST
    # profile; configure from measured `executor_latency_ms` for a given venue.
    base_ms: int = 4
    mean_extra_ms: float = 6.0
    # Descending: _thresholds[k] = floor(2^64 * exp(-k / mean)), while it is at least 1.
    _thresholds: tuple[int, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not 0 <= self.mean_extra_ms <= _MAX_MEAN_MS:
            raise ValueError(f"mean_extra_ms must be within 0..{_MAX_MEAN_MS} ms, not {self.mean_extra_ms}")
        thresholds: list[int] = []
        if self.mean_extra_ms > 0:
            # T_k = 2^64 x r^k with r = exp(-1 / mean), by repeated multiplication in 40 digits
            # (exact enough by 20 orders of magnitude, and the same on every host).
            ratio = _TABLE_CONTEXT.exp(_TABLE_CONTEXT.divide(-1, Decimal(repr(self.mean_extra_ms))))
            value = Decimal(_DRAW_SPACE)
            while value >= 1:
                thresholds.append(int(value))
                value = _TABLE_CONTEXT.multiply(value, ratio)
        # Stored negated, so that the descending table is ascending for bisect.
        object.__setattr__(self, "_thresholds", tuple(-t for t in thresholds))

    def thresholds(self) -> list[int]:
        """The table, descending: floor(2^64 x exp(-k / mean)) for k = 0, 1, ... (for the compiled fold)."""
        return [-t for t in self._thresholds]

    def sample_ms(self, rng: Rng, client_order_id: str) -> int:
        """base + floor(-mean x ln(1 - u)) for the order's own uniform draw u, in integers:
        the extra is the largest k with 2^64 x (1 - u) <= 2^64 x exp(-k / mean)."""
        if not self._thresholds:
            return self.base_ms
        survivor = _DRAW_SPACE - rng.bits64(f"latency|{client_order_id}")  # 2^64 x (1 - u), >= 1
        return self.base_ms + bisect.bisect_right(self._thresholds, -survivor) - 1
