"""The contract catalogue: which model is which versioned schema, and how schemas are derived.

`schemas/` is generated from these models (`execworker schemas export`) and checked against them
in CI (`execworker schemas check`); `docs/api_contracts.md` is generated from `schemas/`.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel

from worker.contract.events import DlqRecord, ExecEvent
from worker.contract.messages import Decision, HarvestHealth, MarketSnapshot, Signal, StrategyModeCommand
from worker.contract.orders import AmendResult, CancelResult, ExecResult, OrderCtx

# Schema name -> model. The name is also the path under schemas/ (without extension).
CONTRACTS: dict[str, type[BaseModel]] = {
    "risk_contract/v1/decision": Decision,
    "risk_contract/v1/signal": Signal,
    "risk_contract/v1/strategy_mode": StrategyModeCommand,
    "risk_contract/v1/harvest_health": HarvestHealth,
    "risk_contract/v1/market": MarketSnapshot,
    "executor_contract/v1/exec_event": ExecEvent,
    "executor_contract/v1/dlq_record": DlqRecord,
    "executor_contract/v1/order_ctx": OrderCtx,
    "executor_contract/v1/exec_result": ExecResult,
    "executor_contract/v1/cancel_result": CancelResult,
    "executor_contract/v1/amend_result": AmendResult,
}
# Messages that travel on a topic, and so have an Avro schema and registry ids.
WIRE_CONTRACTS = (
    "risk_contract/v1/decision",
    "risk_contract/v1/signal",
    "risk_contract/v1/strategy_mode",
    "risk_contract/v1/harvest_health",
    "risk_contract/v1/market",
    "executor_contract/v1/exec_event",
    "executor_contract/v1/dlq_record",
)

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def json_schema(name: str) -> dict[str, Any]:
    schema = CONTRACTS[name].model_json_schema(mode="validation")
    return {"$schema": JSON_SCHEMA_DIALECT, "$id": name, **schema}


def avro_schema(name: str) -> dict[str, Any]:
    """The Avro record schema of a wire contract, derived from its JSON Schema.

    Decimals are Avro strings (plain notation, as in JSON): Avro's decimal logical type needs a
    fixed scale, and prices and quantities do not have one across symbols.
    """
    contract, version, _ = name.split("/")
    schema = json_schema(name)
    namespace = f"execworker.{contract}.{version}"
    defined: set[str] = set()
    return _record(schema, schema.get("$defs", {}), namespace, defined)


def _record(schema: dict[str, Any], defs: dict[str, Any], namespace: str, defined: set[str]) -> dict[str, Any]:
    name = _type_name(schema["title"])
    defined.add(name)
    required = set(schema.get("required", ()))
    fields = []
    for field_name, prop in schema["properties"].items():
        field: dict[str, Any] = {"name": field_name, "type": _avro_type(prop, defs, namespace, defined)}
        if "description" in prop:
            field["doc"] = prop["description"]
        if isinstance(field["type"], list) and field["type"][0] == "null":
            field["default"] = None
        elif field_name not in required and "default" in prop:
            field["default"] = prop["default"]
        fields.append(field)
    record: dict[str, Any] = {"type": "record", "name": name, "namespace": namespace, "fields": fields}
    if "description" in schema:
        record["doc"] = schema["description"]
    return record


def _avro_type(prop: dict[str, Any], defs: dict[str, Any], namespace: str, defined: set[str]) -> Any:
    if "anyOf" in prop:
        branches = [b for b in prop["anyOf"] if b.get("type") != "null"]
        nullable = len(branches) < len(prop["anyOf"])
        if len(branches) != 1:
            raise ValueError(f"unsupported union in contract: {prop}")
        inner = _avro_type(branches[0], defs, namespace, defined)
        return ["null", inner] if nullable else inner
    if "$ref" in prop:
        target = defs[prop["$ref"].rsplit("/", 1)[-1]]
        name = _type_name(target["title"])
        if name in defined:
            return f"{namespace}.{name}"
        if "enum" in target:
            defined.add(name)
            return {"type": "enum", "name": name, "symbols": list(target["enum"])}
        return _record(target, defs, namespace, defined)
    kind = prop.get("type")
    if kind == "string":
        return "string"
    if kind == "integer":
        return "long"
    if kind == "number":
        return "double"
    if kind == "boolean":
        return "boolean"
    if kind == "array":
        return {"type": "array", "items": _avro_type(prop["items"], defs, namespace, defined)}
    if kind == "object" and "additionalProperties" in prop:
        return {"type": "map", "values": _avro_type(prop["additionalProperties"], defs, namespace, defined)}
    raise ValueError(f"unsupported field type in contract: {prop}")


def _type_name(title: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "", title)
