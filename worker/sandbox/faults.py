"""Seeded fault injection for the sandbox exchange.

Spec: comma-separated `name=value`, e.g.
    --faults "latency=2-20ms,timeout_before=0.02,timeout_after=0.02,5xx=0.02,429=0.01,drop=0.01"

| name | value | effect on a request to /api/v3/order* |
|---|---|---|
| latency | `Nms` or `A-Bms` | added delay before handling (uniform in A..B) |
| timeout_before | probability | hang for `hang`, then drop, without touching the order |
| timeout_after | probability | handle the order, then hang for `hang` and drop: the outcome is unknown to the client |
| 5xx | probability | answer 503 without touching the order |
| 5xx_after | probability | handle the order, then answer 500 (outcome unknown) |
| 429 | probability | answer 429 with `Retry-After: retry_after` |
| 418 | probability | answer 418 (IP banned) with `Retry-After` |
| drop | probability | close the connection without an answer, before handling |
| hang | seconds, e.g. `3s` | how long the timeouts hang (default 3 s; make it longer than the client timeout) |
| retry_after | seconds | the Retry-After value of 429 and 418 (default 1) |
| script | `fault;fault;...` | a fixed sequence for the first requests (`none` = no fault), then the random draws |

At most one fault applies per request (drawn in the order of the table). The draws come from one
generator seeded with `--seed`, so a run with the same request order meets the same faults.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import StrEnum


class Fault(StrEnum):
    TIMEOUT_BEFORE = "timeout_before"
    TIMEOUT_AFTER = "timeout_after"
    ERROR_5XX = "5xx"
    ERROR_5XX_AFTER = "5xx_after"
    RATE_429 = "429"
    BAN_418 = "418"
    DROP = "drop"


class FaultSpecError(ValueError):
    pass


@dataclass(frozen=True)
class FaultPlan:
    probabilities: dict[Fault, float]
    latency_ms: tuple[int, int] = (0, 0)
    hang_s: float = 3.0
    retry_after_s: int = 1
    script: tuple[Fault | None, ...] = ()

    @classmethod
    def parse(cls, spec: str | None) -> FaultPlan:
        if not spec:
            return cls({})
        probabilities: dict[Fault, float] = {}
        latency, hang, retry_after = (0, 0), 3.0, 1
        script: tuple[Fault | None, ...] = ()
        for item in spec.split(","):
            name, sep, value = item.strip().partition("=")
            if not sep:
                raise FaultSpecError(f"fault {item!r}: expected name=value")
            try:
                if name == "latency":
                    low, _, high = value.removesuffix("ms").partition("-")
                    latency = (int(low), int(high or low))
                elif name == "hang":
                    hang = float(value.removesuffix("s"))
                elif name == "retry_after":
                    retry_after = int(value.removesuffix("s"))
                elif name == "script":
                    script = tuple(None if step == "none" else Fault(step) for step in value.split(";"))
                else:
                    probability = float(value)
                    if not 0 <= probability <= 1:
                        raise FaultSpecError(f"fault {name}: probability {value} is not within 0..1")
                    probabilities[Fault(name)] = probability
            except ValueError as exc:
                if isinstance(exc, FaultSpecError):
                    raise
                known = ", ".join(["latency", "hang", "retry_after", *[f.value for f in Fault]])
                raise FaultSpecError(f"fault {item!r}: {exc}; known faults: {known}") from None
        return cls(probabilities, latency, hang, retry_after, script)

    def draw(self, rng: random.Random, request_number: int) -> tuple[Fault | None, float]:
        """The fault for the n-th request (0-based; or None) and its added latency in seconds."""
        low, high = self.latency_ms
        delay = rng.uniform(low, high) / 1000 if high else 0.0
        if request_number < len(self.script):
            return self.script[request_number], delay
        for fault in Fault:
            probability = self.probabilities.get(fault, 0.0)
            if probability and rng.random() < probability:
                return fault, delay
        return None, delay
