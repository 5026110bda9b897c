"""A log-bucketed histogram of non-negative integers (HdrHistogram's layout, in a few lines).

Values below `2 * SUB_BUCKETS` are counted exactly; above, each power of two is split into
`SUB_BUCKETS` equal buckets, so a recorded value is known to within 1 / SUB_BUCKETS of itself
(< 0.8% with 128). Memory is bounded by the number of distinct buckets, at most
`SUB_BUCKETS x 64`, however many values are recorded: the run summary keeps one of these instead
of a list of every latency.
"""

from __future__ import annotations

from dataclasses import dataclass, field

SUB_BUCKETS = 128
_EXACT_BELOW = 2 * SUB_BUCKETS
_SHIFT_BASE = SUB_BUCKETS.bit_length()  # 8: values of 8 bits (< 256) are exact


def _bucket(value: int) -> tuple[int, int]:
    """(shift, index): the value lies in [index << shift, (index + 1) << shift)."""
    if value < _EXACT_BELOW:
        return 0, value
    shift = value.bit_length() - _SHIFT_BASE
    return shift, value >> shift


@dataclass
class LogHistogram:
    counts: dict[tuple[int, int], int] = field(default_factory=dict)
    total: int = 0
    min: int | None = None
    max: int | None = None

    def record(self, value: int) -> None:
        if value < 0:
            value = 0  # clock steps backwards: counted as "instant", never dropped
        key = _bucket(value)
        self.counts[key] = self.counts.get(key, 0) + 1
        self.total += 1
        self.min = value if self.min is None else min(self.min, value)
        self.max = value if self.max is None else max(self.max, value)

    def __len__(self) -> int:
        return self.total

    def percentile(self, fraction: float) -> int | None:
        """Nearest-rank percentile (as `summary.percentile` on the sorted values), within one
        bucket: the lowest value of the bucket holding that rank, never below the true minimum
        nor above the true maximum. None when empty."""
        if self.total == 0:
            return None
        rank = max(1, -(-self.total * fraction // 1))  # ceil(n * fraction), at least 1
        seen = 0
        for shift, index in sorted(self.counts, key=lambda k: k[1] << k[0]):
            seen += self.counts[(shift, index)]
            if seen >= rank:
                low = index << shift
                assert self.min is not None and self.max is not None
                return max(self.min, min(low, self.max))
        return self.max
