"""JSON wire format: one object per message, decimals as strings, timestamps as integer ms."""

from __future__ import annotations

from decimal import Decimal
from typing import TypeVar

import execcore
from pydantic import BaseModel, ValidationError

from worker.codec.errors import DecodeError, ErrorClass
from worker.contract.enums import Action, OrderType, Side, TimeInForce
from worker.contract.events import ExecEvent
from worker.contract.messages import Decision

# 64 KiB is two orders of magnitude above a real decision (~600 bytes); anything larger is a bug
# upstream, and refusing it bounds the parser's memory.
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024
# How many validation problems a DLQ reason lists before "and N more".
_MAX_REASONS = 3

# pydantic error types meaning "the top level is not an object".
_NOT_AN_OBJECT = frozenset({"model_type", "model_attributes_type", "dict_type"})

ModelT = TypeVar("ModelT", bound=BaseModel)


def describe_validation_error(error: ValidationError) -> str:
    """One line a person can act on: `field: problem; field: problem (and N more)`."""
    problems = error.errors(include_url=False, include_input=False)
    parts = []
    for problem in problems[:_MAX_REASONS]:
        location = ".".join(str(part) for part in problem["loc"]) or "message"
        parts.append(f"{location}: {problem['msg']}")
    extra = len(problems) - _MAX_REASONS
    return "; ".join(parts) + (f" (and {extra} more)" if extra > 0 else "")


# The compiled decoder of decisions (rust/execcore/src/decision.rs): the same acceptance as the
# pydantic model, proven by tests/unit/test_compiled_core.py; it builds the model's fields itself.
_DECISIONS = execcore.DecisionDecoder(
    Decimal, {member.value: member for enum in (Side, OrderType, TimeInForce, Action) for member in enum}
)
# The fields the compiled decoder and encoder know, in declared order. A field added to a model
# but not to rust/execcore sends that model through pydantic (never wrong bytes), and fails
# tests/unit/test_compiled_core.py until the core learns it.
COMPILED_DECISION_FIELDS = (
    *("signal_row_id", "ts_ms", "event_ts_ms", "symbol", "side", "qty", "px", "order_type", "tif", "regime"),
    *("scenario", "tick_size", "step_size", "min_notional", "warmup", "guard_reason", "consistency"),
    *("weak_signal_throttle", "costs_bps", "action", "target_client_order_id", "new_px", "new_qty"),
)
COMPILED_EVENT_FIELDS = (
    *("event_id", "client_order_id", "signal_row_id", "symbol", "side", "qty", "px_intent", "px_sent"),
    *("px_fill", "qty_filled", "rounding_applied", "rounding_diff", "slippage_bps", "exchange_order_id"),
    *("status", "reason", "sent_ts_ms", "ack_ts_ms", "event_ts_ms", "latency_ms", "executor", "mode"),
    *("scenario", "source", "recv_window_ms", "attempt", "order_type", "tif", "observed"),
)
DECISIONS_COMPILED = tuple(Decision.model_fields) == COMPILED_DECISION_FIELDS
EVENTS_COMPILED = tuple(ExecEvent.model_fields) == COMPILED_EVENT_FIELDS


def decode_json(model: type[ModelT], value: bytes | None, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> ModelT:
    """Parses and validates one message, or raises `DecodeError` saying what is wrong.

    Decisions (the hot path) go through the compiled decoder; every other contract through its
    pydantic model.
    """
    if model is Decision and DECISIONS_COMPILED:
        return decode_decision(value, max_bytes)  # type: ignore[return-value]
    return decode_json_reference(model, value, max_bytes)


def decode_decision(value: bytes | None, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> Decision:
    """A decision through the compiled decoder. A refusal is worded by the pydantic model (only
    then is it run): the compiled decoder decides, the contract's own messages explain."""
    if value is None:
        raise DecodeError(ErrorClass.JSON, "empty message (null value / tombstone)")
    outcome = _DECISIONS.decode(value, max_bytes)
    if isinstance(outcome, str):
        raise _refusal(ErrorClass(outcome), value, max_bytes)
    fields, fields_set = outcome
    decision = Decision.__new__(Decision)
    # What pydantic sets on a validated instance (extra="ignore": no extra dict).
    object.__setattr__(decision, "__dict__", fields)
    object.__setattr__(decision, "__pydantic_fields_set__", fields_set)
    object.__setattr__(decision, "__pydantic_extra__", None)
    object.__setattr__(decision, "__pydantic_private__", None)
    return decision


def _refusal(error_class: ErrorClass, value: bytes, max_bytes: int) -> DecodeError:
    try:
        decode_json_reference(Decision, value, max_bytes)
    except DecodeError as exc:
        return DecodeError(error_class, exc.reason)
    return DecodeError(error_class, "refused by the compiled decoder")


def decode_json_reference(
    model: type[ModelT], value: bytes | None, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
) -> ModelT:
    """The pydantic model's own decoding: every non-decision contract, and the oracle of the
    compiled decision decoder in tests."""
    if value is None:
        raise DecodeError(ErrorClass.JSON, "empty message (null value / tombstone)")
    if len(value) > max_bytes:
        raise DecodeError(ErrorClass.SIZE, f"message is {len(value)} bytes; the limit is {max_bytes}")
    try:
        return model.model_validate_json(value)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        if first["type"] == "json_invalid":
            raise DecodeError(ErrorClass.JSON, f"not valid JSON: {first['msg']}") from None
        if first["type"] in _NOT_AN_OBJECT and not first["loc"]:
            raise DecodeError(ErrorClass.JSON, "expected a JSON object") from None
        raise DecodeError(ErrorClass.SCHEMA, describe_validation_error(exc)) from None


def encode_json(message: BaseModel) -> bytes:
    """Canonical bytes: declared field order, no whitespace, decimals as strings.

    Exec-events (the hot path) are written by the compiled encoder, byte for byte what pydantic
    writes (tests/unit/test_compiled_core.py); everything else by pydantic.
    """
    if EVENTS_COMPILED and type(message) is ExecEvent:
        return execcore.encode_exec_event(message.__dict__, message.source.__dict__)
    return encode_json_reference(message)


def encode_json_reference(message: BaseModel) -> bytes:
    """pydantic's serialisation: the oracle of the compiled exec-event encoder."""
    return message.__pydantic_serializer__.to_json(message)
