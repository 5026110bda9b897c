"""Avro topics end to end, and redriving dead letters once their cause is fixed."""

from __future__ import annotations

import struct
import subprocess
import uuid
from collections import Counter
from pathlib import Path

import orjson

from examples.gen_decisions import decisions
from tests.broker.conftest import TopicsFactory
from tests.broker.helpers import ROOT, TestTopics, cli, drain, produce, read_records
from worker.codec.errors import ErrorClass
from worker.codec.json_codec import decode_json
from worker.contract.events import DlqRecord, ExecEvent
from worker.contract.messages import Decision
from worker.io.kafka import KafkaConfig
from worker.io.outbox import Outbox
from worker.io.topics import codec_for


async def test_avro_topics_end_to_end(kafka: KafkaConfig, topics_factory: TopicsFactory, tmp_path: Path) -> None:
    topics = await topics_factory(decisions="avro", exec_events="avro", dlq="avro")
    decisions_codec = codec_for(topics.file.role("decisions"), ROOT / "schemas")
    good = [decode_json(Decision, orjson.dumps(d)) for d in decisions(200, seed=31)]
    valid = decisions_codec.encode(good[0])
    bad = [
        b"\x00" + struct.pack(">I", 424242) + valid[5:],  # unknown schema id
        b'{"symbol": "BTCUSDT"}',  # JSON on an Avro topic
        valid[:9],  # truncated body
    ]
    messages = [(d.symbol.encode(), decisions_codec.encode(d)) for d in good] + [(b"X", v) for v in bad]
    await produce(kafka, topics.name("decisions"), messages)

    summary = await drain(kafka, topics, tmp_path / "outbox")

    exec_codec = codec_for(topics.file.role("exec_events"), ROOT / "schemas")
    events = [exec_codec.decode(ExecEvent, v) for _, _, v in await read_records(kafka, topics.name("exec_events"))]
    assert sorted(e.signal_row_id for e in events) == sorted(d.signal_row_id for d in good)
    assert summary.dlq == Counter({ErrorClass.UNKNOWN_SCHEMA: 1, ErrorClass.ENCODING: 2})
    dlq_codec = codec_for(topics.file.role("dlq"), ROOT / "schemas")
    dead = [dlq_codec.decode(DlqRecord, v) for _, _, v in await read_records(kafka, topics.name("dlq"))]
    assert sorted(d.error_class for d in dead) == ["encoding", "encoding", "unknown_schema"]
    # The outbox stays JSONL: the same events, as JSON lines.
    lines = [ExecEvent.model_validate_json(line) for line in Outbox(tmp_path / "outbox").iter_lines()]
    assert Counter(e.event_id for e in lines) == Counter(e.event_id for e in events)

    verify = subprocess.run(
        cli(
            "verify",
            "--decisions",
            str(_jsonl(tmp_path, good)),
            "--outbox",
            str(tmp_path / "outbox"),
            "--topics",
            str(topics.path),
            "--bootstrap-servers",
            kafka.bootstrap_servers,
        ),
        cwd=ROOT,
        capture_output=True,
        timeout=120,
    )
    assert verify.returncode == 0, verify.stdout.decode() + verify.stderr.decode()


def _jsonl(tmp_path: Path, items: list[Decision]) -> Path:
    path = tmp_path / "decisions.jsonl"
    path.write_bytes(b"".join(d.model_dump_json().encode() + b"\n" for d in items))
    return path


async def test_redrive_after_the_cause_is_fixed(kafka: KafkaConfig, topics: TestTopics, tmp_path: Path) -> None:
    values = [orjson.dumps(d) for d in decisions(120, seed=32)]
    await produce(kafka, topics.name("decisions"), [(orjson.loads(v)["symbol"].encode(), v) for v in values])
    group, outbox = f"g-{uuid.uuid4().hex[:8]}", tmp_path / "outbox"
    # The operator's allow-list is missing DOGEUSDT: those decisions are dead-lettered.
    allowed = frozenset({"BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT", "XRPUSDT"})
    first = await drain(kafka, topics, outbox, group, symbols=allowed)
    doge = sum(1 for v in values if orjson.loads(v)["symbol"] == "DOGEUSDT")
    assert doge > 0
    assert first.dlq[ErrorClass.SYMBOL] == doge
    assert first.events == len(values) - doge

    def redrive(*extra: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            cli(
                "dlq",
                "redrive",
                "--error-class",
                "symbol",
                "--topics",
                str(topics.path),
                "--bootstrap-servers",
                kafka.bootstrap_servers,
                *extra,
            ),
            cwd=ROOT,
            capture_output=True,
            timeout=120,
        )

    dry = redrive("--dry-run")
    assert dry.returncode == 0
    assert f"{doge} records selected".encode() in dry.stdout
    done = redrive()
    assert done.returncode == 0, done.stderr.decode()
    assert f"redrove {doge} records".encode() in done.stdout

    # With the list fixed, the redriven decisions execute; nothing else is executed twice.
    second = await drain(kafka, topics, outbox, group, symbols=allowed | {"DOGEUSDT"})
    assert second.events == doge
    events = [orjson.loads(v) for _, _, v in await read_records(kafka, topics.name("exec_events"))]
    assert Counter(e["signal_row_id"] for e in events) == Counter(orjson.loads(v)["signal_row_id"] for v in values)
