"""A seeded latency model for simulated venues: the same order always gets the same latency."""

from __future__ import annotations

import math
from dataclasses import dataclass

from worker.policy.rng import Rng


@dataclass(frozen=True, slots=True)
class LatencyModel:
    # A fixed floor (network round trip to a co-located venue gateway) plus an exponential tail,
    # the usual shape of measured REST order acknowledgements. Defaults are a rough spot-REST
    # profile; configure from measured `executor_latency_ms` for a given venue.
    base_ms: int = 4
    mean_extra_ms: float = 6.0

    def sample_ms(self, rng: Rng, client_order_id: str) -> int:
        if self.mean_extra_ms <= 0:
            return self.base_ms
        draw = rng.unit(f"latency|{client_order_id}")
        return self.base_ms + int(-self.mean_extra_ms * math.log1p(-draw))
