"""Field types shared by every message: decimals as strings, millisecond timestamps, symbols.

Money never passes through float: a decimal field accepts only a JSON string (or a Decimal from
Python) and is serialised back as the same string.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Annotated

from pydantic import AfterValidator, BeforeValidator, Field, PlainSerializer, WithJsonSchema

# Longer strings are not prices; refusing them early also bounds Decimal parsing cost.
MAX_DECIMAL_CHARS = 40
# 2000-01-01 .. 2100-01-01 UTC: anything outside is a unit mistake (seconds, micros) or garbage.
MIN_TS_MS = 946_684_800_000
MAX_TS_MS = 4_102_444_800_000

DECIMAL_PATTERN = r"^-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?$"


def parse_decimal(value: object) -> Decimal:
    """Accepts a decimal string (or a Decimal); refuses floats, NaN and Infinity with a reason."""
    if isinstance(value, Decimal):
        parsed = value
    elif isinstance(value, str):
        if len(value) > MAX_DECIMAL_CHARS:
            raise ValueError(f"decimal string longer than {MAX_DECIMAL_CHARS} characters")
        try:
            parsed = Decimal(value)
        except InvalidOperation:
            raise ValueError(f"not a decimal number: {value[:MAX_DECIMAL_CHARS]!r}") from None
    elif isinstance(value, bool | int | float):
        raise ValueError('decimals travel as JSON strings (e.g. "0.001"), not as JSON numbers')
    else:
        raise ValueError(f"expected a decimal string, got {type(value).__name__}")
    if not parsed.is_finite():
        raise ValueError("NaN and Infinity are not valid prices or quantities")
    return parsed


def _positive(value: Decimal) -> Decimal:
    if value <= 0:
        raise ValueError("must be greater than zero")
    return value


def _non_negative(value: Decimal) -> Decimal:
    if value < 0:
        raise ValueError("must not be negative")
    return value


_as_string = PlainSerializer(str, return_type=str)
_string_schema = WithJsonSchema({"type": "string", "pattern": DECIMAL_PATTERN})

DecimalStr = Annotated[Decimal, BeforeValidator(parse_decimal), _as_string, _string_schema]
PositiveDecimal = Annotated[
    Decimal, BeforeValidator(parse_decimal), AfterValidator(_positive), _as_string, _string_schema
]
NonNegativeDecimal = Annotated[
    Decimal, BeforeValidator(parse_decimal), AfterValidator(_non_negative), _as_string, _string_schema
]

TimestampMs = Annotated[int, Field(ge=MIN_TS_MS, le=MAX_TS_MS, strict=True)]
# Upper-case letters and digits only: the symbol names outbox directories, so no separators.
Symbol = Annotated[str, Field(pattern=r"^[A-Z0-9]{2,20}$", strict=True)]
RowId = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[\x21-\x7e]+$", strict=True)]
Label = Annotated[str, Field(max_length=64, strict=True)]
