"""The venue's clock as this process sees it: the local wall clock plus a measured offset.

A request's copies expire at `timestamp + recvWindow` on the *venue's* clock, so every decision
about expiry ("may this still be sent?", "has every copy expired?") is taken against this clock,
with the measurement's error and a safety margin on the side of caution.
"""

from __future__ import annotations

from worker.policy.clock import TimeProvider

# Beyond the measured error: drift between two measurements (a minute apart) and the venue's own
# spread between receiving and checking a request. Binance refuses timestamps 1 s ahead, so a
# second of margin is also the most a correct clock can be off and still be accepted.
SAFETY_MS = 1_000


class VenueClock:
    def __init__(self, local: TimeProvider, safety_ms: int = SAFETY_MS) -> None:
        self._local = local
        self.safety_ms = safety_ms
        self.offset_ms = 0  # venue - local
        self.uncertainty_ms = safety_ms  # until measured, at least the safety margin

    def local_ms(self) -> int:
        return self._local.now_ms()

    def now_ms(self) -> int:
        """The venue's time now, by our best estimate."""
        return self._local.now_ms() + self.offset_ms

    def observe(self, server_ms: int, sent_local_ms: int, received_local_ms: int) -> None:
        """One `/api/v3/time` round trip: the server read its clock somewhere inside it."""
        midpoint = (sent_local_ms + received_local_ms) // 2
        self.offset_ms = server_ms - midpoint
        self.uncertainty_ms = (received_local_ms - sent_local_ms + 1) // 2

    def before(self, venue_ms: int) -> bool:
        """True if the venue's clock is certainly still before `venue_ms` (margin included)."""
        return self.now_ms() + self.uncertainty_ms + self.safety_ms < venue_ms

    def past(self, venue_ms: int) -> bool:
        """True if the venue's clock is certainly past `venue_ms` (margin included)."""
        return self.now_ms() - self.uncertainty_ms - self.safety_ms > venue_ms
