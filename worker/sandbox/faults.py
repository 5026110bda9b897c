"""Seeded fault injection for the sandbox exchange.

Spec: comma-separated `name=value`, e.g.
    --faults "latency=2-20ms,timeout_before=0.02,lost_answer=0.02,late=0.05,duplicate=0.02,skew=+700ms"

| name | value | effect on a request to /api/v3/order* |
|---|---|---|
| latency | `Nms` or `A-Bms` | added delay before handling (uniform in A..B) |
| timeout_before | probability | hang for `hang`, then drop, without touching the order |
| timeout_after | probability | handle the order, then hang for `hang` and drop: the outcome is unknown to the client |
| lost_answer | probability | the same as timeout_after, under its own name and count |
| late | probability | hold the request `late_hold` (not handled), the client sees no answer; then handle it |
| duplicate | probability | handle and answer it; handle an identical copy again `dup_delay` later |
| 5xx | probability | answer 503 without touching the order |
| 5xx_after | probability | handle the order, then answer 500 (outcome unknown) |
| 429 | probability | answer 429 with `Retry-After: retry_after` |
| 418 | probability | answer 418 (IP banned) with `Retry-After` |
| drop | probability | close the connection without an answer, before handling |
| hang | seconds, e.g. `3s` | how long the timeouts hang (default 3 s; make it longer than the client timeout) |
| late_hold | `A-Bs` | how long a late request is held (uniform in A..B; default 2.5-4.5 s) |
| dup_delay | `A-Bs` | when the copy of a duplicated request arrives (uniform in A..B; default 0.5-3 s) |
| skew | `+Nms` / `-Nms` | the venue's clock runs N ms ahead of (+) or behind (-) the local clock |
| retry_after | seconds | the Retry-After value of 429 and 418 (default 1) |
| script | `fault;fault;...` | a fixed sequence for the first requests (`none` = no fault), then the random draws |

At most one fault applies per request (drawn in the order of the `Fault` enum). The draws come
from one generator seeded with `--seed`, so a run with the same request order meets the same
faults, holds and copy delays. `skew` is not drawn: it is a property of the venue's clock.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any


class Fault(StrEnum):
    TIMEOUT_BEFORE = "timeout_before"
    TIMEOUT_AFTER = "timeout_after"
    LOST_ANSWER = "lost_answer"
    LATE = "late"
    DUPLICATE = "duplicate"
    ERROR_5XX = "5xx"
    ERROR_5XX_AFTER = "5xx_after"
    RATE_429 = "429"
    BAN_418 = "418"
    DROP = "drop"


# Faults whose request is handled and whose answer never reaches the client.
ANSWER_LOST = frozenset({Fault.TIMEOUT_AFTER, Fault.LOST_ANSWER})

_SETTINGS = ("latency", "hang", "late_hold", "dup_delay", "skew", "retry_after", "script")


class FaultSpecError(ValueError):
    pass


@dataclass(frozen=True)
class Draw:
    """What happens to one request: its fault (or None), the added latency, and for `late` the
    hold and for `duplicate` the delay of the copy (seconds; 0 for the other faults)."""

    fault: Fault | None
    latency_s: float = 0.0
    after_s: float = 0.0


@dataclass(frozen=True)
class FaultPlan:
    probabilities: dict[Fault, float]
    latency_ms: tuple[int, int] = (0, 0)
    hang_s: float = 3.0
    retry_after_s: int = 1
    script: tuple[Fault | None, ...] = ()
    late_hold_s: tuple[float, float] = (2.5, 4.5)
    dup_delay_s: tuple[float, float] = (0.5, 3.0)
    skew_ms: int = 0

    @classmethod
    def parse(cls, spec: str | None) -> FaultPlan:
        if not spec:
            return cls({})
        probabilities: dict[Fault, float] = {}
        settings: dict[str, Any] = {}
        for item in spec.split(","):
            name, sep, value = item.strip().partition("=")
            if not sep:
                raise FaultSpecError(f"fault {item!r}: expected name=value")
            try:
                if name == "latency":
                    low, _, high = value.removesuffix("ms").partition("-")
                    settings["latency_ms"] = (int(low), int(high or low))
                elif name == "hang":
                    settings["hang_s"] = float(value.removesuffix("s"))
                elif name == "late_hold":
                    settings["late_hold_s"] = _seconds_range(value)
                elif name == "dup_delay":
                    settings["dup_delay_s"] = _seconds_range(value)
                elif name == "skew":
                    settings["skew_ms"] = int(value.removesuffix("ms"))
                elif name == "retry_after":
                    settings["retry_after_s"] = int(value.removesuffix("s"))
                elif name == "script":
                    settings["script"] = tuple(None if step == "none" else Fault(step) for step in value.split(";"))
                else:
                    probability = float(value)
                    if not 0 <= probability <= 1:
                        raise FaultSpecError(f"fault {name}: probability {value} is not within 0..1")
                    probabilities[Fault(name)] = probability
            except ValueError as exc:
                if isinstance(exc, FaultSpecError):
                    raise
                known = ", ".join([*_SETTINGS, *[f.value for f in Fault]])
                raise FaultSpecError(f"fault {item!r}: {exc}; known faults: {known}") from None
        return replace(cls(probabilities), **settings)

    def draw(self, rng: random.Random, request_number: int) -> Draw:
        """The fault for the n-th request (0-based) to an order endpoint, with its timings."""
        low, high = self.latency_ms
        delay = rng.uniform(low, high) / 1000 if high else 0.0
        fault: Fault | None = None
        if request_number < len(self.script):
            fault = self.script[request_number]
        else:
            for candidate in Fault:
                probability = self.probabilities.get(candidate, 0.0)
                if probability and rng.random() < probability:
                    fault = candidate
                    break
        if fault is Fault.LATE:
            return Draw(fault, delay, rng.uniform(*self.late_hold_s))
        if fault is Fault.DUPLICATE:
            return Draw(fault, delay, rng.uniform(*self.dup_delay_s))
        return Draw(fault, delay)


def _seconds_range(value: str) -> tuple[float, float]:
    """`2.5-4.5s` or `3s` -> (low, high) in seconds."""
    low, _, high = value.removesuffix("s").partition("-")
    bounds = (float(low), float(high or low))
    if not 0 <= bounds[0] <= bounds[1]:
        raise FaultSpecError(f"range {value!r}: expected 0 <= A <= B")
    return bounds
