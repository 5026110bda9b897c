"""Aligning an order to the venue grid with Decimal arithmetic, before an id is derived.

Default rule (configurable): a BUY price rounds down to the tick and a SELL price up, so the
rounded price is never worse for us than the intent; quantity rounds down to the step, so we
never trade more than asked.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_UP, Context, Decimal
from enum import StrEnum

import execcore

from worker.contract.enums import Side

# Inputs have at most 40 characters (contract.types.MAX_DECIMAL_CHARS); 100 significant digits
# keep every division, product and quantize below exact for any pair of them (the default
# context's 28 digits is not: a 30-digit price raised InvalidOperation).
EXACT = Context(prec=100)
_HALF = Decimal("0.5")


class PriceRounding(StrEnum):
    PASSIVE = "passive"  # BUY down, SELL up: never pay more / sell for less than intended
    AGGRESSIVE = "aggressive"  # BUY up, SELL down: more likely to fill
    NEAREST = "nearest"  # half-up to the nearest tick


@dataclass(frozen=True, slots=True)
class Rounded:
    qty: Decimal
    px: Decimal | None
    rounding_applied: bool
    rounding_diff: Decimal  # px - px_intent (0 when there is no price)


class RoundingError(ValueError):
    """The order cannot be placed on the grid (too small after rounding, below min notional)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def round_to_step(value: Decimal, step: Decimal, *, up: bool) -> Decimal:
    """`value` moved onto the grid `k * step`, up or down; exact in Decimal."""
    rounding = ROUND_CEILING if up else ROUND_FLOOR
    if _is_power_of_ten(step):
        return value.quantize(step, rounding=rounding, context=EXACT)
    return _round_by_division(value, step, rounding)


def round_nearest(value: Decimal, step: Decimal) -> Decimal:
    """`value` moved to the nearest grid point, halves up (values here are positive)."""
    if _is_power_of_ten(step):
        return value.quantize(step, rounding=ROUND_HALF_UP, context=EXACT)
    return _round_by_division(value, step, ROUND_HALF_UP)


def _round_by_division(value: Decimal, step: Decimal, rounding: str) -> Decimal:
    """The general grid rule for any step (0.5, 0.25, 5, "0.010"): k = round(value / step)."""
    # Every operation names the EXACT context explicitly (cheaper than entering a localcontext).
    units = EXACT.divide(value, step).to_integral_value(rounding=rounding, context=EXACT)
    # Keep the step's number of decimals ("0.010", not "0.01000000"): a canonical string.
    exponent = step.as_tuple().exponent
    product = EXACT.multiply(units, step)
    return product.quantize(step, context=EXACT) if isinstance(exponent, int) and exponent < 0 else product


# Venue grids repeat (a handful of tick and step sizes per venue), so whether a step is a power
# of ten is remembered; bounded, because steps come from input messages. Keyed by the string:
# Decimal("0.01") == Decimal("0.010"), but only the first is a power-of-ten grid exponent.
_POWER_OF_TEN: dict[str, bool] = {}
_POWER_OF_TEN_MAX = 4096


def _is_power_of_ten(step: Decimal) -> bool:
    """1, 0.1, 0.01, 1E+1 ...: then one `quantize` is the whole rounding (3x cheaper than dividing).

    Only a bare 1 digit counts: "0.010" (digits 1, 0) means a 0.01 grid written with three
    decimals, and quantizing to its exponent would round to 0.001.
    """
    key = str(step)
    known = _POWER_OF_TEN.get(key)
    if known is None:
        sign, digits, exponent = step.as_tuple()
        known = sign == 0 and digits == (1,) and isinstance(exponent, int)
        if len(_POWER_OF_TEN) < _POWER_OF_TEN_MAX:
            _POWER_OF_TEN[key] = known
    return known


def align_order(
    side: Side,
    qty: Decimal,
    px: Decimal | None,
    tick_size: Decimal,
    step_size: Decimal,
    min_notional: Decimal,
    rule: PriceRounding = PriceRounding.PASSIVE,
) -> Rounded:
    """Rounds price and quantity to the venue grid and checks the minimum notional.

    Computed by the compiled core in exact integer arithmetic; a refusal is worded by the
    Python rule (`align_order_reference`, also the test oracle), which is run only then.
    """
    outcome = execcore.align_order(
        side.value,
        str(qty),
        None if px is None else str(px),
        str(tick_size),
        str(step_size),
        str(min_notional),
        rule.value,
    )
    if isinstance(outcome, str):
        try:
            align_order_reference(side, qty, px, tick_size, step_size, min_notional, rule)
        except RoundingError as exc:
            raise RoundingError(outcome, exc.detail) from None
        raise RoundingError(outcome, "refused by the compiled core")
    qty_text, px_text, applied, diff = outcome
    return Rounded(
        qty=Decimal(qty_text),
        px=None if px_text is None else Decimal(px_text),
        rounding_applied=applied,
        rounding_diff=Decimal(diff),
    )


def align_order_reference(
    side: Side,
    qty: Decimal,
    px: Decimal | None,
    tick_size: Decimal,
    step_size: Decimal,
    min_notional: Decimal,
    rule: PriceRounding = PriceRounding.PASSIVE,
) -> Rounded:
    """The grid rule in Python, with Decimal: the oracle of the compiled `align_order`."""
    qty_rounded = round_to_step(qty, step_size, up=False)
    if qty_rounded <= 0:
        raise RoundingError("qty_below_step", f"qty {qty} rounds to 0 at step {step_size}")
    px_rounded: Decimal | None = None
    if px is not None:
        if rule is PriceRounding.NEAREST:
            px_rounded = round_nearest(px, tick_size)
        else:
            round_up = (side is Side.SELL) == (rule is PriceRounding.PASSIVE)
            px_rounded = round_to_step(px, tick_size, up=round_up)
        if px_rounded <= 0:
            raise RoundingError("px_below_tick", f"px {px} rounds to 0 at tick {tick_size}")
        notional = EXACT.multiply(px_rounded, qty_rounded)
        if notional < min_notional:
            raise RoundingError("min_notional", f"notional {notional} is below the venue minimum {min_notional}")
    applied = qty_rounded != qty or (px is not None and px_rounded != px)
    diff = EXACT.subtract(px_rounded, px) if (px is not None and px_rounded is not None) else Decimal(0)
    return Rounded(qty=qty_rounded, px=px_rounded, rounding_applied=applied, rounding_diff=diff)
