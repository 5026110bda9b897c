from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_UP, Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker.contract.enums import Side
from worker.policy.rounding import (
    PriceRounding,
    RoundingError,
    _round_by_division,
    align_order,
    round_nearest,
    round_to_step,
)

TICKS = st.sampled_from([Decimal(t) for t in ("0.01", "0.00001", "0.5", "1", "0.0001", "10")])
PRICES = st.decimals(min_value=Decimal("0.001"), max_value=Decimal("100000"), places=6)
QTYS = st.decimals(min_value=Decimal("0.001"), max_value=Decimal("1000"), places=6)


@given(px=PRICES, tick=TICKS, step=TICKS, qty=QTYS, side=st.sampled_from(list(Side)))
def test_passive_rounding_is_on_grid_and_never_adverse(
    px: Decimal, tick: Decimal, step: Decimal, qty: Decimal, side: Side
) -> None:
    try:
        result = align_order(side, qty, px, tick, step, Decimal(0))
    except RoundingError:
        # Only legitimate when the order is smaller than one grid step.
        assert qty < step or px < tick
        return
    assert result.px is not None
    assert isinstance(result.px, Decimal) and isinstance(result.qty, Decimal)
    assert result.px % tick == 0
    assert result.qty % step == 0
    assert result.qty <= qty  # never trade more than asked
    if side is Side.BUY:
        assert result.px <= px  # never pay more than intended
    else:
        assert result.px >= px  # never sell for less than intended
    assert abs(result.px - px) < tick
    assert result.rounding_diff == result.px - px
    assert result.rounding_applied == (result.px != px or result.qty != qty)


@given(px=PRICES, tick=TICKS, side=st.sampled_from(list(Side)))
def test_aggressive_rounding_moves_towards_the_market(px: Decimal, tick: Decimal, side: Side) -> None:
    try:
        result = align_order(side, Decimal(1), px, tick, Decimal("0.001"), Decimal(0), PriceRounding.AGGRESSIVE)
    except RoundingError:
        return
    assert result.px is not None and result.px % tick == 0
    assert (result.px >= px) if side is Side.BUY else (result.px <= px)


def test_min_notional_is_checked_after_rounding() -> None:
    with pytest.raises(RoundingError) as excinfo:
        align_order(Side.BUY, Decimal("0.0001"), Decimal("30000"), Decimal("0.01"), Decimal("0.0001"), Decimal("5"))
    assert excinfo.value.reason == "min_notional"


def test_quantity_below_one_step_is_refused() -> None:
    with pytest.raises(RoundingError) as excinfo:
        align_order(Side.SELL, Decimal("0.4"), Decimal("1"), Decimal("0.01"), Decimal("1"), Decimal("0"))
    assert excinfo.value.reason == "qty_below_step"


def test_market_order_keeps_no_price() -> None:
    result = align_order(Side.BUY, Decimal("1.2345"), None, Decimal("0.01"), Decimal("0.01"), Decimal("5"))
    assert result.px is None and result.qty == Decimal("1.23") and result.rounding_diff == 0


def test_round_to_step_is_exact_for_binary_unfriendly_values() -> None:
    # 0.1 + 0.2 style values that float arithmetic gets wrong.
    assert round_to_step(Decimal("0.30000000000000004"), Decimal("0.1"), up=False) == Decimal("0.3")
    assert round_to_step(Decimal("0.3"), Decimal("0.1"), up=True) == Decimal("0.3")


@given(
    px=st.from_regex(r"[1-9][0-9]{0,28}\.[0-9]{1,9}", fullmatch=True),
    qty=st.from_regex(r"[1-9][0-9]{0,20}\.[0-9]{1,9}", fullmatch=True),
    side=st.sampled_from(list(Side)),
)
def test_rounding_is_exact_for_any_contract_sized_decimal(px: str, qty: str, side: Side) -> None:
    # Up to 40-character decimals (the contract's limit) must never raise or lose digits.
    tick, step = Decimal("0.000000001"), Decimal("0.000000001")
    result = align_order(side, Decimal(qty), Decimal(px), tick, step, Decimal(0))
    assert result.px is not None
    assert result.px == Decimal(px) and result.qty == Decimal(qty)  # already on a 1e-9 grid
    coarse = align_order(side, Decimal(qty), Decimal(px), Decimal("0.01"), Decimal("1"), Decimal(0))
    assert coarse.px is not None and coarse.px.as_tuple().exponent == -2
    assert abs(coarse.px - Decimal(px)) < Decimal("0.01")


# Power-of-ten grids, the same grids written with extra zeros, and grids that are not powers of ten.
ANY_STEP = st.sampled_from(
    [Decimal(t) for t in ("1", "0.1", "0.01", "0.00000001", "1E+1", "1E+3", "0.010", "0.10", "10", "0.5", "0.25", "5")]
)


@given(value=st.from_regex(r"[0-9]{1,20}\.[0-9]{1,15}", fullmatch=True), step=ANY_STEP)
def test_the_quantize_shortcut_equals_the_general_rule_to_the_last_digit(value: str, step: Decimal) -> None:
    # The shortcut for power-of-ten grids must give the same Decimal, written the same way
    # (the string feeds client order ids and byte-identical replays), as k = round(value / step).
    amount = Decimal(value)
    for up, rounding in ((True, ROUND_CEILING), (False, ROUND_FLOOR)):
        assert str(round_to_step(amount, step, up=up)) == str(_round_by_division(amount, step, rounding))
    assert str(round_nearest(amount, step)) == str(_round_by_division(amount, step, ROUND_HALF_UP))


def test_a_grid_written_with_a_trailing_zero_keeps_its_own_grid() -> None:
    # Decimal("0.010") == Decimal("0.01"): the power-of-ten memo must not confuse the two.
    assert str(round_to_step(Decimal("1.2345"), Decimal("0.01"), up=False)) == "1.23"
    assert str(round_to_step(Decimal("1.2345"), Decimal("0.010"), up=False)) == "1.230"
