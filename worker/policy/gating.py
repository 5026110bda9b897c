"""Pre-trade gates driven by upstream state: deny on warmup/guard, throttle weak or inconsistent
signals. Pure functions of the decision, the order id and the configured thresholds."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import StrEnum

from worker.contract.messages import Decision


class GateOutcome(StrEnum):
    PASS = "pass"
    DENY = "deny"  # never sent: a hard upstream state says no
    THROTTLE = "throttle"  # never sent: down-sampled or rate-limited


@dataclass(frozen=True, slots=True)
class GateVerdict:
    outcome: GateOutcome
    reason: str | None = None


PASS = GateVerdict(GateOutcome.PASS)


@dataclass(frozen=True, slots=True)
class GatePolicy:
    # Below this consistency an order is down-sampled: kept with probability consistency / min.
    # 0.5 follows upstream's own "low consistency" flag; set per strategy mode.
    min_consistency: float = 0.5
    honour_weak_signal_throttle: bool = True


def keep_fraction(client_order_id: str) -> float:
    """A stable number in [0, 1) for an order: the same id always samples the same way."""
    digest = hashlib.blake2b(client_order_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def pre_trade_gate(decision: Decision, client_order_id: str, policy: GatePolicy) -> GateVerdict:
    """Denies on warmup or an active guard; throttles weak or low-consistency signals."""
    if decision.warmup:
        return GateVerdict(GateOutcome.DENY, "warmup")
    if decision.guard_reason:
        return GateVerdict(GateOutcome.DENY, f"guard:{decision.guard_reason}")
    if policy.honour_weak_signal_throttle and decision.weak_signal_throttle:
        return GateVerdict(GateOutcome.THROTTLE, "weak_signal")
    if decision.consistency < policy.min_consistency:
        keep_probability = decision.consistency / policy.min_consistency
        if keep_fraction(client_order_id) >= keep_probability:
            return GateVerdict(GateOutcome.THROTTLE, "low_consistency")
    return PASS
