"""Avro ids from a Confluent-compatible schema registry (tests/fake_registry.py on 127.0.0.1) when
SCHEMA_REGISTRY_URL is set: `schemas export --register`, ids looked up by subject `<topic>-value`,
a Confluent-style consumer (id from the frame, schema from GET /schemas/ids/{id}) decodes ours."""

from __future__ import annotations

import io
import json
import shutil
import struct
import urllib.request
import uuid
from pathlib import Path

import fastavro
import pytest

from tests.factories import decision_bytes
from tests.fake_registry import fake_registry
from worker.cli.main import main
from worker.codec.json_codec import decode_json
from worker.codec.registry import FileSchemaRegistry
from worker.contract.messages import Decision
from worker.io.schema_registry import USER_INFO_ENV, RegistryClient, SchemaRegistryError
from worker.io.topics import TopicsConfigError, codec_for, load_topics, write_variant

ROOT = Path(__file__).resolve().parents[2]
CONTRACT = "risk_contract/v1/decision"


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """A private schemas/ copy and a topics file whose decisions and exec-events topics are Avro."""
    for key in ("SCHEMA_REGISTRY_URL", USER_INFO_ENV):
        monkeypatch.delenv(key, raising=False)
    schemas = tmp_path / "schemas"
    shutil.copytree(ROOT / "schemas", schemas)
    topics = tmp_path / "topics.yaml"
    write_variant(
        ROOT / "topics.yaml", topics, uuid.uuid4().hex[:8], formats={"decisions": "avro", "exec_events": "avro"}
    )
    return schemas, topics


def register(schemas: Path, topics: Path, tmp_path: Path) -> int:
    return main(
        [
            "schemas",
            "export",
            "--register",
            "--schemas-dir",
            str(schemas),
            "--doc",
            str(tmp_path / "c.md"),
            "--topics",
            str(topics),
        ]
    )


def test_register_then_write_and_read_with_registry_ids(
    workspace: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    schemas, topics_path = workspace
    topics = load_topics(topics_path)
    decisions = topics.role("decisions")
    local = FileSchemaRegistry(schemas / "registry.json")
    with fake_registry() as (url, state):
        monkeypatch.setenv("SCHEMA_REGISTRY_URL", url)
        assert register(schemas, topics_path, tmp_path) == 0
        subject = f"{decisions.name}-value"
        assert len(state.subjects[subject]) == len(local.versions(CONTRACT))
        assert f"{topics.role('exec_events').name}-value" in state.subjects
        assert not any(name.startswith(topics.role("signals").name) for name in state.subjects)  # JSON topic
        assert "registry id 10" in capsys.readouterr().out
        known = dict(state.schemas)
        assert register(schemas, topics_path, tmp_path) == 0  # idempotent
        assert state.schemas == known

        codec = codec_for(decisions, schemas)
        frame = codec.encode(decode_json(Decision, decision_bytes()))
        magic, schema_id = struct.unpack(">bI", frame[:5])
        assert magic == 0 and schema_id == state.subjects[subject][-1] >= 101
        assert schema_id != local.latest_id(CONTRACT)  # the registry's id, not the file's

        # A consumer that knows only the registry: id from the frame, schema by id.
        with urllib.request.urlopen(f"{url}/schemas/ids/{schema_id}") as response:
            writer = fastavro.parse_schema(json.loads(json.loads(response.read())["schema"]))
        record = fastavro.schemaless_reader(io.BytesIO(frame[5:]), writer, writer)
        assert record["signal_row_id"] == "row-1" and record["symbol"] == "BTCUSDT"
        # And ours, built afresh, reads it back through the registry too.
        assert codec_for(decisions, schemas).decode(Decision, frame).signal_row_id == "row-1"


def test_unregistered_subject_says_to_register(workspace: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    schemas, topics_path = workspace
    with fake_registry() as (url, _):
        monkeypatch.setenv("SCHEMA_REGISTRY_URL", url)
        with pytest.raises(TopicsConfigError, match="schemas export --register"):
            codec_for(load_topics(topics_path).role("decisions"), schemas)


def test_without_a_registry_the_file_ids(workspace: tuple[Path, Path]) -> None:
    schemas, topics_path = workspace
    frame = codec_for(load_topics(topics_path).role("decisions"), schemas).encode(
        decode_json(Decision, decision_bytes())
    )
    assert struct.unpack(">bI", frame[:5])[1] == FileSchemaRegistry(schemas / "registry.json").latest_id(CONTRACT)


def test_register_needs_the_url(
    workspace: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    schemas, topics_path = workspace
    assert register(schemas, topics_path, tmp_path) == 2
    assert "SCHEMA_REGISTRY_URL" in capsys.readouterr().err


def test_basic_auth_and_unreachable() -> None:
    schema = {"type": "string"}
    with fake_registry(user_info="key:the-secret") as (url, _):
        assert RegistryClient(url, user_info=None).__repr__() == f"RegistryClient({url!r})"
        refused = RegistryClient.from_env({"SCHEMA_REGISTRY_URL": url, USER_INFO_ENV: "key:wrong-secret"})
        assert refused is not None
        with pytest.raises(SchemaRegistryError, match=USER_INFO_ENV) as caught:
            refused.register("t-value", schema)
        assert "wrong-secret" not in str(caught.value) and "wrong-secret" not in repr(refused)
        allowed = RegistryClient.from_env({"SCHEMA_REGISTRY_URL": url, USER_INFO_ENV: "key:the-secret"})
        assert allowed is not None and allowed.register("t-value", schema) == 101
        assert allowed.lookup("t-value", schema) == 101
    with pytest.raises(SchemaRegistryError, match="unreachable"):
        RegistryClient(url).register("t-value", schema)
    assert RegistryClient.from_env({}) is None
