"""Building contract models from values this process derived itself, without validating again.

Validation guards the edges: every inbound message is validated when it is decoded, results
from a venue are validated when they are parsed, and every exec-event the engine can build is
checked against the wire contract in tests (`tests/unit/test_engine.py`,
`tests/unit/test_schemas.py`). In between, the engine computes each field from those validated
values with Decimal arithmetic; running the validators a second time on them was about half of
a backtest's cost per decision (OrderCtx, ExecResult and ExecEvent: ~20 us of ~45 us here).
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel

ModelT = TypeVar("ModelT", bound=BaseModel)


class _Missing:
    """Stands for a required field in a model's template until a value replaces it."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<missing>"


_MISSING: Any = _Missing()


class _Shape:
    """Per model: a template of its fields in declared order (optional fields at their
    defaults, immutable values only: None, Decimal, enums; required ones `_MISSING`), and the
    names of the required ones. Cached: `model_fields` is a computed class property, itself ~1 us."""

    __slots__ = ("names", "required", "size", "template")

    def __init__(self, model: type[BaseModel]) -> None:
        if any(info.default_factory is not None for info in model.model_fields.values()):
            # A factory's value is built per instance; sharing one would alias mutable state.
            raise TypeError(f"{model.__name__} has a default_factory field; build it with {model.__name__}(...)")
        fields = model.model_fields
        self.template = {name: _MISSING if info.is_required() else info.get_default() for name, info in fields.items()}
        self.required = frozenset(name for name, info in fields.items() if info.is_required())
        self.size = len(fields)
        self.names = tuple(fields)


_SHAPES: dict[type[BaseModel], _Shape] = {}
_set = object.__setattr__


def trusted(model: type[ModelT], /, **values: Any) -> ModelT:
    """`model(**values)` without validation, for values already of the declared types.

    Every field without a default must be given; a missing or unknown field is a bug and
    raises TypeError (the serializer would otherwise fail later, far from the cause).
    """
    shape = _SHAPES.get(model)
    if shape is None:
        shape = _SHAPES[model] = _Shape(model)
    # In declared order: updating a copy of the template keeps each field's position (the
    # serializer writes `__dict__` in its order, and canonical JSON, the outbox's dedupe and
    # replay digests start with the first declared field). Two C-level dict operations.
    fields = shape.template.copy()
    fields.update(values)
    if len(fields) != shape.size or not shape.required <= values.keys():
        missing = sorted(shape.required - values.keys())
        unknown = sorted(set(values) - set(shape.template))
        raise TypeError(f"{model.__name__}: missing fields {missing}, unknown fields {unknown}")
    instance = model.__new__(model)
    # What BaseModel.model_construct sets, without its per-field loop (3x cheaper here).
    _set(instance, "__dict__", fields)
    _set(instance, "__pydantic_fields_set__", set(values))
    _set(instance, "__pydantic_extra__", None)
    _set(instance, "__pydantic_private__", None)
    return instance


def trusted_fields(model: type[ModelT], fields: dict[str, Any], /) -> ModelT:
    """`trusted` for a call site that writes every field itself, in declared order, as a dict
    display (cheaper than keyword arguments merged into a template: the hot path's events).

    Every field counts as set. A dict with a field missing, unknown or out of order is a bug and
    raises TypeError, as `trusted` does.
    """
    shape = _SHAPES.get(model)
    if shape is None:
        shape = _SHAPES[model] = _Shape(model)
    if tuple(fields) != shape.names:
        raise TypeError(f"{model.__name__}: fields {list(fields)} are not its fields {list(shape.names)} in order")
    instance = model.__new__(model)
    _set(instance, "__dict__", fields)
    _set(instance, "__pydantic_fields_set__", set(shape.names))
    _set(instance, "__pydantic_extra__", None)
    _set(instance, "__pydantic_private__", None)
    return instance
