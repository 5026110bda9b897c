"""The chaos run's configuration: its fault mix is a valid sandbox spec with the delivery faults,
and a pause is longer than the session timeout (or it would not be a pause that loses partitions)."""

import pytest

from bench.chaos import ChaosConfig
from worker.sandbox.faults import Fault, FaultPlan


def test_the_default_mix_has_late_and_duplicate_deliveries_lost_answers_and_skew() -> None:
    plan = FaultPlan.parse(ChaosConfig().fault_spec())
    assert {Fault.LATE, Fault.DUPLICATE, Fault.LOST_ANSWER, Fault.TIMEOUT_AFTER} <= set(plan.probabilities)
    assert plan.late_hold_s == (2.5, 4.5)
    assert plan.skew_ms == -700
    assert ChaosConfig().pauses > 0 and ChaosConfig().limits == "unlimited"


def test_the_delivery_faults_are_configurable_and_zero_leaves_them_out() -> None:
    config = ChaosConfig(late=0.12, duplicate=0, lost_answer=0, skew_ms=250, late_hold="1-2s", faults="")
    plan = FaultPlan.parse(config.fault_spec())
    assert plan.probabilities == {Fault.LATE: 0.12}
    assert (plan.late_hold_s, plan.skew_ms) == ((1.0, 2.0), 250)


def test_a_pause_must_outlast_the_session_timeout() -> None:
    with pytest.raises(ValueError, match="must exceed the session timeout"):
        ChaosConfig(freeze_s=5.0, session_timeout_ms=6_000)
    assert ChaosConfig(pauses=0, freeze_s=1.0).pauses == 0
