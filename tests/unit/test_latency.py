"""The simulated latency draw: exponential, per order, and computed without host-dependent floats."""

from __future__ import annotations

import math
from decimal import Context, Decimal

import pytest

from worker.core.latency import LatencyModel
from worker.policy.rng import Rng

EXACT = Context(prec=60)


def reference_ms(model: LatencyModel, draw: int) -> int:
    """base + floor(-mean x ln(1 - u)) in 60-digit Decimal arithmetic."""
    survivor = EXACT.divide(Decimal(2**64 - draw), Decimal(2**64))
    extra = EXACT.multiply(-Decimal(repr(model.mean_extra_ms)), EXACT.ln(survivor))
    return model.base_ms + int(extra.to_integral_value(rounding="ROUND_FLOOR"))


@pytest.mark.parametrize("mean", [6.0, 0.5, 250.0])
def test_the_integer_draw_equals_the_exact_exponential(mean: float) -> None:
    model, rng = LatencyModel(base_ms=3, mean_extra_ms=mean), Rng(11)
    samples = [model.sample_ms(rng, f"order-{i}") for i in range(3_000)]
    assert samples == [reference_ms(model, rng.bits64(f"latency|order-{i}")) for i in range(3_000)]
    # The shape is right: the floor of an exponential of mean m averages 1 / (e^(1/m) - 1).
    average_extra = sum(samples) / len(samples) - 3
    expected = 1 / (math.exp(1 / mean) - 1)
    assert abs(average_extra - expected) < max(0.05, expected * 0.1)


def test_extreme_draws_stay_finite_and_a_zero_mean_is_the_base() -> None:
    model = LatencyModel()

    class Fixed(Rng):
        def __init__(self, draw: int) -> None:
            super().__init__(0)
            self.draw = draw

        def bits64(self, key: str) -> int:
            return self.draw

    assert model.sample_ms(Fixed(0), "x") == model.base_ms  # u = 0: no extra
    assert model.sample_ms(Fixed(2**64 - 1), "x") == reference_ms(model, 2**64 - 1)  # u -> 1: ~266 ms
    assert LatencyModel(base_ms=7, mean_extra_ms=0).sample_ms(Rng(1), "x") == 7
    with pytest.raises(ValueError, match="mean_extra_ms"):
        LatencyModel(mean_extra_ms=-1)
