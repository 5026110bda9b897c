"""Hypothesis strategies read from a contract's JSON Schema (the subset our pydantic models emit:
objects with required/optional properties, strings with pattern/length, bounded integers and
numbers, booleans, enums by $ref, and nullable `anyOf`).

hypothesis-jsonschema would do this in general, but its release (0.23.1) calls Hypothesis
internals that the pinned Hypothesis no longer has; this reader covers what `schemas/` holds and
fails loudly on anything else.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st


def from_schema(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    return _strategy(schema, schema.get("$defs", {}))


def _strategy(node: dict[str, Any], defs: dict[str, Any]) -> st.SearchStrategy[Any]:
    if "$ref" in node:
        return _strategy(defs[node["$ref"].rsplit("/", 1)[-1]], defs)
    if "anyOf" in node:
        return st.one_of([_strategy(branch, defs) for branch in node["anyOf"]])
    if "enum" in node:
        return st.sampled_from(node["enum"])
    kind = node.get("type")
    if kind == "null":
        return st.none()
    if kind == "boolean":
        return st.booleans()
    if kind == "integer":
        return st.integers(min_value=node.get("minimum"), max_value=node.get("maximum"))
    if kind == "number":
        return st.floats(
            min_value=node.get("minimum"), max_value=node.get("maximum"), allow_nan=False, allow_infinity=False
        )
    if kind == "string":
        low, high = node.get("minLength", 0), node.get("maxLength")
        if "pattern" in node:
            text = st.from_regex(node["pattern"], fullmatch=True)
        else:
            text = st.text(max_size=high if high is not None else 80)
        return text.filter(lambda s: low <= len(s) and (high is None or len(s) <= high))
    if kind == "object":
        return _object(node, defs)
    if kind == "array" and "items" in node:
        return st.lists(_strategy(node["items"], defs), max_size=4)
    raise ValueError(f"schema node not covered by tests/schema_strategies.py: {node}")


def _object(node: dict[str, Any], defs: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    required = set(node.get("required", ()))
    properties = node.get("properties", {})
    return st.fixed_dictionaries(
        {name: _strategy(prop, defs) for name, prop in properties.items() if name in required},
        optional={name: _strategy(prop, defs) for name, prop in properties.items() if name not in required},
    )
