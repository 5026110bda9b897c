"""Field types shared by every message: decimals as strings, millisecond timestamps, symbols.

Money never passes through float. On the wire a decimal is a JSON string in plain notation
("0.001", never 1e-3, never a JSON number); in Python it is a `Decimal`; it is written back in
plain notation, so our own output always parses as our own input. The check is a regular
expression run inside pydantic-core (no Python call per field: decoding a decision costs ~4 us,
not ~9 us with a Python validator per decimal).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated, Any

from pydantic import Field, GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema

# Longer strings are not prices; refusing them early also bounds Decimal parsing cost.
MAX_DECIMAL_CHARS = 40
# 2000-01-01 .. 2100-01-01 UTC: anything outside is a unit mistake (seconds, micros) or garbage.
MIN_TS_MS = 946_684_800_000
MAX_TS_MS = 4_102_444_800_000

# Plain notation only. POSITIVE: some digit is non-zero (no look-ahead in pydantic's Rust regex).
SIGNED_PATTERN = r"^-?[0-9]+(\.[0-9]+)?$"
NON_NEGATIVE_PATTERN = r"^[0-9]+(\.[0-9]+)?$"
POSITIVE_PATTERN = r"^([0-9]*[1-9][0-9]*(\.[0-9]+)?|[0-9]+\.[0-9]*[1-9][0-9]*)$"


def plain(value: Decimal) -> str:
    """A Decimal in plain notation: Decimal("1E-7") -> "0.0000001" (str() would keep the E)."""
    return format(value, "f")


@dataclass(frozen=True, slots=True)
class DecimalString:
    """Annotated marker: a Decimal that travels as a plain-notation JSON string."""

    pattern: str
    meaning: str  # "a positive decimal", used in error messages

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        message = f'expected {self.meaning} as a JSON string in plain notation, e.g. "0.001"'
        from_string = core_schema.no_info_after_validator_function(
            Decimal,
            core_schema.custom_error_schema(
                core_schema.str_schema(pattern=self.pattern, max_length=MAX_DECIMAL_CHARS, strict=True),
                custom_error_type="decimal_string",
                custom_error_message=message,
            ),
        )
        # A Decimal built in Python (the engine's outputs) is only type-checked here: a Python
        # check per field doubled the engine's cost. Every value that leaves the process is
        # re-validated against the wire rules in tests (test_every_event_..._valid_against_the_contract).
        from_decimal = core_schema.is_instance_schema(Decimal)
        return core_schema.json_or_python_schema(
            json_schema=from_string,
            python_schema=core_schema.union_schema([from_decimal, from_string]),
            serialization=core_schema.plain_serializer_function_ser_schema(
                plain, return_schema=core_schema.str_schema()
            ),
        )

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {
            "type": "string",
            "pattern": self.pattern,
            "maxLength": MAX_DECIMAL_CHARS,
            "format": "decimal",
        }


DecimalStr = Annotated[Decimal, DecimalString(SIGNED_PATTERN, "a decimal")]
PositiveDecimal = Annotated[Decimal, DecimalString(POSITIVE_PATTERN, "a positive decimal")]
NonNegativeDecimal = Annotated[Decimal, DecimalString(NON_NEGATIVE_PATTERN, "a non-negative decimal")]

TimestampMs = Annotated[int, Field(ge=MIN_TS_MS, le=MAX_TS_MS, strict=True)]
# Upper-case letters and digits only: the symbol names outbox directories, so no separators.
Symbol = Annotated[str, Field(pattern=r"^[A-Z0-9]{2,20}$", strict=True)]
RowId = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[\x21-\x7e]+$", strict=True)]
Label = Annotated[str, Field(max_length=64, strict=True)]
# Rule names of `worker.policy.rules` (warmup, guard, ...), for the optional `observed` field.
RuleName = Annotated[str, Field(pattern=r"^[a-z_]{1,32}$", strict=True)]
