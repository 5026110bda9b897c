"""Pre-trade gates driven by upstream state: deny on warmup/guard, throttle weak or inconsistent
signals. Pure functions of the decision, the order id, the configured thresholds and the rollout
state of each rule (`worker.policy.rules`: enforce, observe or off)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import StrEnum

from worker.contract.messages import Decision
from worker.policy.rules import ALL_ENFORCED, EffectiveRules, Rule, RuleState


class GateOutcome(StrEnum):
    PASS = "pass"
    DENY = "deny"  # never sent: a hard upstream state says no
    THROTTLE = "throttle"  # never sent: down-sampled or rate-limited


@dataclass(frozen=True, slots=True)
class GateVerdict:
    outcome: GateOutcome
    reason: str | None = None
    # Rules in `observe` that would have stopped this order (which goes ahead), in gate order.
    observed: tuple[str, ...] = ()


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


def pre_trade_gate(
    decision: Decision, client_order_id: str, policy: GatePolicy, rules: EffectiveRules = ALL_ENFORCED
) -> GateVerdict:
    """Denies on warmup or an active guard; throttles weak or low-consistency signals.

    A rule in `enforce` stops the order at the first that fires; one in `observe` that fires is
    listed in `observed` instead (kept only if the order goes ahead); one that is `off` is skipped.
    """
    observed: list[str] = []
    if decision.warmup:
        state = rules.states[Rule.WARMUP]
        if state is RuleState.ENFORCE:
            return GateVerdict(GateOutcome.DENY, "warmup")
        if state is RuleState.OBSERVE:
            observed.append(Rule.WARMUP.value)
    if decision.guard_reason:
        state = rules.guard(decision.guard_reason)
        if state is RuleState.ENFORCE:
            return GateVerdict(GateOutcome.DENY, f"guard:{decision.guard_reason}")
        if state is RuleState.OBSERVE:
            observed.append(Rule.GUARD.value)
    if policy.honour_weak_signal_throttle and decision.weak_signal_throttle:
        state = rules.states[Rule.WEAK_SIGNAL]
        if state is RuleState.ENFORCE:
            return GateVerdict(GateOutcome.THROTTLE, "weak_signal")
        if state is RuleState.OBSERVE:
            observed.append(Rule.WEAK_SIGNAL.value)
    if decision.consistency < policy.min_consistency:
        state = rules.states[Rule.LOW_CONSISTENCY]
        if state is not RuleState.OFF:
            keep_probability = decision.consistency / policy.min_consistency
            if keep_fraction(client_order_id) >= keep_probability:
                if state is RuleState.ENFORCE:
                    return GateVerdict(GateOutcome.THROTTLE, "low_consistency")
                observed.append(Rule.LOW_CONSISTENCY.value)
    return GateVerdict(GateOutcome.PASS, None, tuple(observed)) if observed else PASS
