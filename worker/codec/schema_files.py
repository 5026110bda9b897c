"""`schemas/` and `docs/api_contracts.md`: generate them from the models, and check them.

export  models -> schemas/*.schema.json, schemas/*.avsc, schemas/registry.json, the docs
check   files are current; every registered version can be read by the next (backward
        compatible); pydantic, JSON Schema and Avro agree on generated messages; doc links live
"""

from __future__ import annotations

import io
import itertools
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fastavro

from worker.codec.contracts import CONTRACTS, WIRE_CONTRACTS, avro_schema, json_schema
from worker.codec.registry import FileSchemaRegistry
from worker.contract.enums import TERMINAL_STATUSES
from worker.contract.state_machine import TRANSITIONS

DOC_PATH = Path("docs/api_contracts.md")


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


@dataclass
class Report:
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def generated_files(schemas_dir: Path, doc_path: Path) -> dict[Path, str]:
    """Every file `export` writes, with its content (registry aside)."""
    files: dict[Path, str] = {}
    for name in CONTRACTS:
        files[schemas_dir / f"{name}.schema.json"] = render(json_schema(name))
    for name in WIRE_CONTRACTS:
        files[schemas_dir / f"{name}.avsc"] = render(avro_schema(name))
    files[doc_path] = render_docs(schemas_dir, doc_path)
    return files


def export(schemas_dir: Path, doc_path: Path, allow_breaking: bool = False) -> Report:
    report = Report()
    registry = FileSchemaRegistry(schemas_dir / "registry.json")
    for name in WIRE_CONTRACTS:
        schema = avro_schema(name)
        previous = registry.latest_schema(name)
        if previous is not None and not allow_breaking:
            problems = compatibility_problems(previous, schema)
            if problems:
                report.problems += [f"{name}: {p}" for p in problems]
                continue
        schema_id, added = registry.register(name, schema)
        if added:
            report.notes.append(f"registered {name} as schema id {schema_id}")
    if not report.ok:
        report.problems.append(
            "breaking change: publish it as a new contract version (v2) instead, "
            "or pass --allow-breaking if nothing has been written with the old one"
        )
        return report
    schemas_dir.mkdir(parents=True, exist_ok=True)
    registry.save()
    for path, content in generated_files(schemas_dir, doc_path).items():
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_text(encoding="utf-8") != content:
            path.write_text(content, encoding="utf-8")
            report.notes.append(f"wrote {path}")
    return report


def check(schemas_dir: Path, doc_path: Path, examples: int = 200) -> Report:
    report = Report()
    for path, content in generated_files(schemas_dir, doc_path).items():
        if not path.exists():
            report.problems.append(f"{path} is missing: run `execworker schemas export`")
        elif path.read_text(encoding="utf-8") != content:
            report.problems.append(f"{path} is stale (the models changed): run `execworker schemas export`")
    registry = FileSchemaRegistry(schemas_dir / "registry.json")
    for name in WIRE_CONTRACTS:
        if registry.latest_schema(name) != avro_schema(name):
            report.problems.append(f"schemas/registry.json has no entry for the current {name}: export")
    report.problems += registry_compatibility(registry)
    report.problems += round_trip_problems(registry, examples)
    report.problems += link_problems(doc_path)
    return report


# -- backward compatibility -----------------------------------------------------------------


def compatibility_problems(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Why data written with `old` could not be read with `new` (empty when it can)."""
    problems = []
    old_fields = {f["name"]: f for f in old["fields"]}
    for new_field in new["fields"]:
        if new_field["name"] not in old_fields and "default" not in new_field:
            problems.append(f"field {new_field['name']!r} added without a default")
    try:
        for record in sample_records(old):
            buffer = io.BytesIO()
            fastavro.schemaless_writer(buffer, fastavro.parse_schema(old), record)
            buffer.seek(0)
            fastavro.schemaless_reader(buffer, fastavro.parse_schema(old), fastavro.parse_schema(new))
    except Exception as exc:  # SchemaResolutionError and friends
        problems.append(f"old data does not resolve against the new schema: {exc}")
    return problems


def registry_compatibility(registry: FileSchemaRegistry) -> list[str]:
    problems = []
    entries = json.loads(registry.rendered())["schemas"]
    for name in WIRE_CONTRACTS:
        versions = [e["schema"] for e in sorted(entries, key=lambda e: e["id"]) if e["name"] == name]
        for old, new in itertools.pairwise(versions):
            problems += [f"{name}: {p}" for p in compatibility_problems(old, new)]
    return problems


def sample_records(schema: dict[str, Any]) -> list[dict[str, Any]]:
    """Two records of an Avro record schema: nullable fields null in one, set in the other."""
    named: dict[str, Any] = {}

    def value(avro_type: Any, fill_optional: bool) -> Any:
        if isinstance(avro_type, list):
            branch = avro_type[1] if fill_optional or avro_type[0] != "null" else "null"
            return None if branch == "null" else value(branch, fill_optional)
        if isinstance(avro_type, str):
            if avro_type in named:
                return value(named[avro_type], fill_optional)
            short = avro_type.rsplit(".", 1)[-1]
            if short in named:
                return value(named[short], fill_optional)
            return {"string": "1", "long": 1, "double": 0.5, "boolean": True, "int": 1}[avro_type]
        kind = avro_type["type"]
        if kind == "record":
            named[avro_type["name"]] = avro_type
            return {f["name"]: value(f["type"], fill_optional) for f in avro_type["fields"]}
        if kind == "enum":
            named[avro_type["name"]] = avro_type
            return avro_type["symbols"][0]
        if kind == "array":
            return [value(avro_type["items"], fill_optional)]
        if kind == "map":
            return {"k": value(avro_type["values"], fill_optional)}
        return value(kind, fill_optional)

    return [value(schema, False), value(schema, True)]


# -- pydantic vs JSON Schema vs Avro ----------------------------------------------------------


def round_trip_problems(registry: FileSchemaRegistry, examples: int) -> list[str]:
    """Hypothesis generates messages from each JSON Schema; all three views must agree."""
    try:
        import jsonschema
        from hypothesis import HealthCheck, given, settings
        from hypothesis import strategies as st
    except ImportError as exc:
        return [f"schemas check needs the dev extras ({exc.name}); pip install -e '.[dev]'"]

    from pydantic import ValidationError

    from worker.codec.json_codec import encode_json
    from worker.codec.wire import AvroWire

    def agreement_test(name: str) -> Callable[[], None]:
        model = CONTRACTS[name]
        schema = json_schema(name)
        validator = jsonschema.Draft202012Validator(schema)
        avro = AvroWire(registry, name)

        @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(strategy_for(schema, schema.get("$defs", {}), st))
        def agree(raw: dict[str, Any]) -> None:
            try:
                message = model.model_validate_json(json.dumps(raw))
            except ValidationError as exc:
                # Cross-field rules (e.g. LIMIT needs px) are beyond JSON Schema; anything else
                # the schema allows but pydantic refuses is a disagreement.
                if all(error["loc"] == () for error in exc.errors()):
                    return
                raise AssertionError(f"JSON Schema accepts what pydantic refuses: {exc}") from None
            wire = encode_json(message)
            validator.validate(json.loads(wire))
            assert model.model_validate_json(wire) == message, "JSON round trip changed the message"
            assert avro.decode(model, avro.encode(message)) == message, "Avro round trip changed the message"

        return agree  # type: ignore[no-any-return]

    problems: list[str] = []
    for name in WIRE_CONTRACTS:
        try:
            agreement_test(name)()
        except Exception as exc:
            problems.append(f"{name}: {exc}")
    return problems


def strategy_for(prop: dict[str, Any], defs: dict[str, Any], st: Any) -> Any:
    """A hypothesis strategy for the JSON Schema subset our contracts use."""
    if "$ref" in prop:
        return strategy_for(defs[prop["$ref"].rsplit("/", 1)[-1]], defs, st)
    if "anyOf" in prop:
        return st.one_of(*(strategy_for(branch, defs, st) for branch in prop["anyOf"]))
    if "enum" in prop:
        return st.sampled_from(prop["enum"])
    kind = prop.get("type")
    if kind == "null":
        return st.none()
    if kind == "boolean":
        return st.booleans()
    if kind == "integer":
        return st.integers(min_value=prop.get("minimum", -(2**53)), max_value=prop.get("maximum", 2**53))
    if kind == "number":
        return st.floats(
            min_value=prop.get("minimum"),
            max_value=prop.get("maximum"),
            allow_nan=False,
            allow_infinity=False,
        )
    if kind == "string":
        if "pattern" in prop:
            strings = st.from_regex(prop["pattern"], fullmatch=True)
            limit = prop.get("maxLength")
            minimum = prop.get("minLength", 0)
            return strings.filter(lambda s: len(s) >= minimum and (limit is None or len(s) <= limit))
        return st.text(min_size=prop.get("minLength", 0), max_size=min(prop.get("maxLength", 30), 30))
    if kind == "array":
        return st.lists(strategy_for(prop["items"], defs, st), max_size=3)
    if kind == "object" and "properties" in prop:
        required = set(prop.get("required", ()))
        fields = {k: strategy_for(v, defs, st) for k, v in prop["properties"].items() if k in required}
        optional = {k: strategy_for(v, defs, st) for k, v in prop["properties"].items() if k not in required}
        return st.fixed_dictionaries(fields, optional=optional)
    if kind == "object":
        return st.dictionaries(st.text(max_size=10), strategy_for(prop["additionalProperties"], defs, st), max_size=3)
    raise ValueError(f"no strategy for {prop}")


# -- docs -------------------------------------------------------------------------------------


def _unit(name: str, prop: dict[str, Any]) -> str:
    rules: list[tuple[Callable[[str], bool], str]] = [
        (lambda n: n == "latency_ms", "ms"),
        (lambda n: n.endswith("_ms"), "ms since epoch, UTC"),
        (lambda n: n.endswith("_bps"), "basis points"),
        (lambda n: n.startswith("px") or n in ("new_px", "tick_size", "rounding_diff"), "quote asset"),
        (lambda n: n == "min_notional", "quote asset"),
        (lambda n: n.startswith("qty") or n in ("new_qty", "step_size"), "base asset"),
        (lambda n: n == "consistency", "0..1"),
    ]
    for matches, unit in rules:
        if matches(name):
            return unit
    return ""


def _type_label(prop: dict[str, Any], defs: dict[str, Any]) -> str:
    if "anyOf" in prop:
        labels = [_type_label(b, defs) for b in prop["anyOf"] if b.get("type") != "null"]
        nullable = any(b.get("type") == "null" for b in prop["anyOf"])
        return " \\| ".join(labels) + (" \\| null" if nullable else "")
    if "$ref" in prop:
        target = defs[prop["$ref"].rsplit("/", 1)[-1]]
        if "enum" in target:
            return "enum: " + ", ".join(f"`{s}`" for s in target["enum"])
        return f"object `{target['title']}`"
    if prop.get("format") == "decimal":
        return "decimal string"
    if prop.get("type") == "array":
        return f"array of {_type_label(prop['items'], defs)}"
    if prop.get("type") == "object":
        return "map of string to " + _type_label(prop.get("additionalProperties", {}), defs)
    return str(prop.get("type", "any"))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^a-z0-9 _-]", "", heading.lower()).replace(" ", "-")


def render_docs(schemas_dir: Path, doc_path: Path) -> str:
    relative = Path(*([".."] * (len(doc_path.parts) - 1))) / schemas_dir if len(doc_path.parts) > 1 else schemas_dir
    lines = [
        "# API contracts",
        "",
        "<!-- Generated by `execworker schemas export` from schemas/ (itself generated from",
        "     worker/contract). Do not edit: CI fails when this file is stale or a link is dead. -->",
        "",
        "Two contract families, versioned together: `risk_contract/v1` is what upstream",
        "(Strategy+Risk, the Signal layer) sends to the executor; `executor_contract/v1` is what the",
        "executor accepts from the runtime and emits. On the wire every message is one JSON object",
        "(or Avro in the Confluent framing, per topic in `topics.yaml`); decimals are strings in",
        'plain notation (`"0.001"`, never `1e-3`, never a JSON number), timestamps integer',
        "milliseconds since the epoch (UTC). Unknown input fields are ignored; every declared field",
        "is checked strictly, and a message that fails goes to `exec-dlq.v1` with a reason.",
        "",
        "## Index",
        "",
    ]
    families: dict[str, list[str]] = {}
    for name in CONTRACTS:
        families.setdefault(name.rsplit("/", 1)[0], []).append(name)
    for family, names in families.items():
        lines.append(f"- [{family}](#{slug(family)})")
        for name in names:
            lines.append(f"  - [{name.rsplit('/', 1)[1]}](#{slug(name)})")
    lines.append(f"- [Order states](#{slug('Order states')})")
    for family, names in families.items():
        lines += ["", f"## {family}"]
        for name in names:
            schema = json_schema(name)
            defs = schema.get("$defs", {})
            required = set(schema.get("required", ()))
            files = [f"[JSON Schema]({(relative / f'{name}.schema.json').as_posix()})"]
            if name in WIRE_CONTRACTS:
                files.append(f"[Avro]({(relative / f'{name}.avsc').as_posix()})")
            lines += ["", f"### {name}", "", schema.get("description", ""), "", " · ".join(files), ""]
            lines += ["| field | type | unit | required | meaning |", "|---|---|---|---|---|"]
            for field_name, prop in schema["properties"].items():
                meaning = prop.get("description", "").replace("|", "\\|")
                lines.append(
                    f"| `{field_name}` | {_type_label(prop, defs)} | {_unit(field_name, prop)} | "
                    f"{'yes' if field_name in required else 'no'} | {meaning} |"
                )
    lines += [
        "",
        "## Order states",
        "",
        "Every exec-event carries the order's `status` after it. An order moves only along this table",
        "(from `worker/contract/state_machine.py`); anything else is an error, never applied. A first",
        "event implies the order was built (`PENDING_NEW`) and, unless a local gate stopped it, sent.",
        "Terminal states: " + ", ".join(f"`{s}`" for s in sorted(TERMINAL_STATUSES)) + ".",
        "",
        "| from | may move to |",
        "|---|---|",
    ]
    for status, targets in TRANSITIONS.items():
        if targets:
            lines.append(f"| `{status}` | " + ", ".join(f"`{t}`" for t in sorted(targets)) + " |")
    return "\n".join(lines) + "\n"


def link_problems(doc_path: Path) -> list[str]:
    """Dead relative links and anchors in the generated document."""
    if not doc_path.exists():
        return [f"{doc_path} is missing"]
    text = doc_path.read_text(encoding="utf-8")
    anchors = {slug(m.group(1)) for m in re.finditer(r"^#+ (.+)$", text, re.MULTILINE)}
    problems = []
    for target in re.findall(r"\]\(([^)]+)\)", text):
        if target.startswith("#"):
            if target[1:] not in anchors:
                problems.append(f"{doc_path}: dead anchor {target}")
        elif not re.match(r"^[a-z]+://", target) and not (doc_path.parent / target).exists():
            problems.append(f"{doc_path}: dead link {target}")
    return problems
