import copy
import shutil
import struct
from pathlib import Path
from typing import Any

import pytest

from tests.factories import decision_bytes
from worker.codec.contracts import WIRE_CONTRACTS, avro_schema
from worker.codec.errors import DecodeError, ErrorClass
from worker.codec.json_codec import decode_json
from worker.codec.registry import FileSchemaRegistry
from worker.codec.schema_files import check, compatibility_problems, export, link_problems
from worker.codec.wire import AvroWire
from worker.contract.messages import Decision

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def workspace(tmp_path: Path) -> tuple[Path, Path]:
    schemas = tmp_path / "schemas"
    shutil.copytree(ROOT / "schemas", schemas)
    doc = tmp_path / "docs" / "api_contracts.md"
    doc.parent.mkdir()
    shutil.copy(ROOT / "docs" / "api_contracts.md", doc)
    return schemas, doc


def test_the_committed_schemas_and_docs_are_current(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    report = check(Path("schemas"), Path("docs/api_contracts.md"), examples=30)
    assert report.problems == []


def test_a_stale_schema_file_is_reported(workspace: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    schemas, _doc = workspace
    monkeypatch.chdir(schemas.parent)
    target = Path("schemas/risk_contract/v1/decision.schema.json")
    target.write_text(target.read_text().replace("Venue symbol", "Symbol"))
    report = check(Path("schemas"), Path("docs/api_contracts.md"), examples=5)
    assert any("decision.schema.json is stale" in p for p in report.problems)


def _with_field(schema: dict[str, Any], field: dict[str, Any]) -> dict[str, Any]:
    changed = copy.deepcopy(schema)
    changed["fields"].append(field)
    return changed


def test_compatibility_rules() -> None:
    old = avro_schema("executor_contract/v1/exec_event")
    assert compatibility_problems(old, old) == []
    assert compatibility_problems(old, _with_field(old, {"name": "venue", "type": "string", "default": ""})) == []
    breaking = compatibility_problems(old, _with_field(old, {"name": "venue", "type": "string"}))
    assert any("added without a default" in p for p in breaking)
    retyped = copy.deepcopy(old)
    next(f for f in retyped["fields"] if f["name"] == "symbol")["type"] = "long"
    assert any("does not resolve" in p for p in compatibility_problems(old, retyped))
    # Removing a field is backward compatible: a new reader ignores it in old data.
    removed = copy.deepcopy(old)
    removed["fields"] = [f for f in removed["fields"] if f["name"] != "reason"]
    assert compatibility_problems(old, removed) == []


def test_export_refuses_a_breaking_change(workspace: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    schemas, doc = workspace
    registry = FileSchemaRegistry(schemas / "registry.json")
    current = avro_schema("risk_contract/v1/decision")
    # Pretend the registered v1 had no `regime`: today's schema requires it with no default.
    older = copy.deepcopy(current)
    older["fields"] = [f for f in older["fields"] if f["name"] != "regime"]
    registry._entries = [e for e in registry._entries if e["name"] != "risk_contract/v1/decision"]
    registry.register("risk_contract/v1/decision", older)
    registry.save()
    report = export(schemas, doc)
    assert not report.ok
    assert any("'regime' added without a default" in p for p in report.problems)


def test_dead_links_are_found(tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text("# Title\n\n[ok](#title) [bad](#nowhere) [file](missing.json)\n")
    problems = link_problems(doc)
    assert problems == [f"{doc}: dead anchor #nowhere", f"{doc}: dead link missing.json"]


@pytest.fixture
def avro_decisions() -> AvroWire:
    return AvroWire(FileSchemaRegistry(ROOT / "schemas" / "registry.json"), "risk_contract/v1/decision")


def test_avro_round_trip_in_confluent_framing(avro_decisions: AvroWire) -> None:
    decision = decode_json(Decision, decision_bytes())
    wire = avro_decisions.encode(decision)
    magic, schema_id = struct.unpack(">bI", wire[:5])
    assert magic == 0
    assert schema_id == FileSchemaRegistry(ROOT / "schemas" / "registry.json").latest_id("risk_contract/v1/decision")
    assert avro_decisions.decode(Decision, wire) == decision


@pytest.mark.parametrize(
    ("mutate", "error_class"),
    [
        (lambda w: b"\x01" + w[1:], ErrorClass.ENCODING),  # bad magic byte
        (lambda w: w[:3], ErrorClass.ENCODING),  # shorter than the header
        (lambda w: w[:1] + struct.pack(">I", 999_999) + w[5:], ErrorClass.UNKNOWN_SCHEMA),
        (lambda w: w[:5] + b"\xff" * 3, ErrorClass.ENCODING),  # corrupt body
    ],
)
def test_bad_avro_is_refused_with_a_reason(avro_decisions: AvroWire, mutate: Any, error_class: ErrorClass) -> None:
    wire = avro_decisions.encode(decode_json(Decision, decision_bytes()))
    with pytest.raises(DecodeError) as excinfo:
        avro_decisions.decode(Decision, mutate(wire))
    assert excinfo.value.error_class is error_class


def test_every_wire_contract_has_a_registered_schema() -> None:
    registry = FileSchemaRegistry(ROOT / "schemas" / "registry.json")
    for name in WIRE_CONTRACTS:
        assert registry.latest_schema(name) == avro_schema(name)
