"""JSON wire format: one object per message, decimals as strings, timestamps as integer ms."""

from __future__ import annotations

from typing import TypeVar

from pydantic import BaseModel, ValidationError

from worker.codec.errors import DecodeError, ErrorClass

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


def decode_json(model: type[ModelT], value: bytes | None, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> ModelT:
    """Parses and validates one message, or raises `DecodeError` saying what is wrong."""
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
    """Canonical bytes: declared field order, no whitespace, decimals as strings."""
    return message.__pydantic_serializer__.to_json(message)
