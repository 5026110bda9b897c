"""Slippage arithmetic in Decimal: signed so that a positive number is always adverse."""

from __future__ import annotations

from decimal import Decimal

import execcore

from worker.contract.enums import Side
from worker.policy.rounding import EXACT

_BPS = Decimal(10_000)
# Four decimal places of a basis point: far below any venue's tick, and a fixed exponent keeps
# the serialised value canonical.
_SLIPPAGE_QUANTUM = Decimal("0.0001")


def slippage_bps(side: Side, px_intent: Decimal | None, px_fill: Decimal | None) -> Decimal | None:
    """Fill price against intended price in bps; positive = worse for us (BUY higher, SELL lower).

    One exact division in the compiled core; `slippage_bps_reference` is its Python oracle.
    """
    if px_intent is None or px_fill is None:
        return None
    value = execcore.slippage_bps(side.value, str(px_intent), str(px_fill))
    return None if value is None else Decimal(value)


def slippage_bps_reference(side: Side, px_intent: Decimal | None, px_fill: Decimal | None) -> Decimal | None:
    """The rule in Python's decimal: the oracle of the compiled `slippage_bps`."""
    if px_intent is None or px_fill is None:
        return None
    signed = EXACT.subtract(px_fill, px_intent) if side is Side.BUY else EXACT.subtract(px_intent, px_fill)
    return EXACT.multiply(EXACT.divide(signed, px_intent), _BPS).quantize(_SLIPPAGE_QUANTUM, context=EXACT)
