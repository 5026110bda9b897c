"""Issue 10, the holes on the input and takeover side, against the real broker: a takeover that
fails, an input too large for the DLQ, one decision on two partitions, and a binding rate wall
processed again after an aborted transaction. Each test fails on the code before the fix
(commit d085908), for the reason its name gives."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import subprocess
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import yaml
from aiokafka.errors import KafkaError

from tests.broker.conftest import TopicsFactory
from tests.broker.helpers import (
    ROOT,
    TestTopics,
    committed_offsets,
    drain,
    make_worker,
    produce,
    read_records,
    run_command,
)
from tests.broker.test_rate_linkage import burst, modes_engine
from tests.factories import decision_dict
from worker.core.dlq import DLQ_VALUE_KEEP_BYTES
from worker.io.kafka import KafkaConfig
from worker.io.partitioner import partition_for
from worker.runtime.summary import RunSummary
from worker.runtime.transactions import TransactionWriter


async def produce_to(kafka: KafkaConfig, topic: str, partition: int, key: bytes | None, value: bytes) -> None:
    """One record to an explicit partition (what an unkeyed or hand-partitioning producer does)."""
    producer = kafka.producer(acks="all", enable_idempotence=True)
    await producer.start()
    try:
        await producer.send_and_wait(topic, value=value, key=key, partition=partition)
    finally:
        await producer.stop()


def keyed(*rows: dict[str, Any]) -> list[tuple[bytes | None, bytes]]:
    return [(str(row["symbol"]).encode(), orjson.dumps(row)) for row in rows]


async def test_unreadable_exec_event_fails_the_takeover_loudly_and_skips_no_input(
    kafka: KafkaConfig, topics: TestTopics, tmp_path: Path
) -> None:
    exec_topic = topics.name("exec_events")
    # Our own history has a record that is not an exec-event (disk corruption, a stray producer).
    await produce_to(kafka, exec_topic, 0, b"BTCUSDT", b"\x00\xff not an exec-event")
    rows = [decision_dict(signal_row_id=f"r{i}", symbol=symbol) for i, symbol in enumerate(["BTCUSDT", "ETHUSDT"] * 5)]
    await produce(kafka, topics.name("decisions"), keyed(*rows))
    group = f"g-{uuid.uuid4().hex[:8]}"

    result = await asyncio.to_thread(
        subprocess.run,
        run_command(topics, kafka, group, tmp_path / "outbox", "--until-drained"),
        cwd=ROOT,
        capture_output=True,
        timeout=90,
    )
    err = result.stderr.decode()
    # Retried, then a non-zero exit (a supervisor restarts it), naming the record at fault.
    assert result.returncode == 3, err[-3000:]
    assert f"{exec_topic}[0]@0 is not an exec-event" in err
    assert "exiting so that a supervisor restarts the worker" in err
    # Nothing was processed or committed: no input was skipped past.
    offsets = await committed_offsets(kafka, group, topics.name("decisions"))
    assert set(offsets.values()) == {None}, offsets
    assert [(p, o) for p, o, _ in await read_records(kafka, exec_topic)] == [(0, 0)]


async def test_900kb_input_goes_to_the_dlq_cut_and_the_decisions_behind_it_execute(
    kafka: KafkaConfig, topics_factory: TopicsFactory, tmp_path: Path
) -> None:
    # The input topic as an older topics.yaml (or a hand-made topic) created it: no size limit of
    # its own, so the broker's default (~1 MB) lets a 900 KB value in.
    source = yaml.safe_load((ROOT / "topics.yaml").read_text())
    for spec in source["topics"].values():
        spec.get("config", {}).pop("max.message.bytes", None)
    unlimited = tmp_path / "unlimited-topics.yaml"
    unlimited.write_text(yaml.safe_dump(source))
    topics = await topics_factory(source=unlimited)

    huge = orjson.dumps({**decision_dict(signal_row_id="huge"), "note": "x" * 900_000})
    behind = [decision_dict(signal_row_id=f"behind-{i}", ts_ms=1_767_225_600_500 + i) for i in range(20)]
    # All keyed BTCUSDT: one partition, the huge record first, the good ones behind it.
    await produce(kafka, topics.name("decisions"), [(b"BTCUSDT", huge), *keyed(*behind)])

    summary = await asyncio.wait_for(drain(kafka, topics, tmp_path / "outbox"), timeout=60)

    (dead,) = [orjson.loads(v) for _, _, v in await read_records(kafka, topics.name("dlq"))]
    assert dead["value_size"] == len(huge)
    assert dead["value_sha256"] == hashlib.sha256(huge).hexdigest()
    assert base64.b64decode(dead["value_b64"]) == huge[:DLQ_VALUE_KEEP_BYTES]
    assert dead["source"]["topic"] == topics.name("decisions")
    events = [orjson.loads(v) for _, _, v in await read_records(kafka, topics.name("exec_events"))]
    assert Counter(e["signal_row_id"] for e in events) == Counter(r["signal_row_id"] for r in behind)
    assert summary.events == len(behind)


async def test_one_decision_on_two_partitions_is_one_order_and_the_misrouted_copy_is_dead_lettered(
    kafka: KafkaConfig, topics: TestTopics, tmp_path: Path
) -> None:
    decisions_topic = topics.name("decisions")
    partitions = topics.file.role("decisions").partitions
    row = decision_dict(signal_row_id="twice", tif="IOC")
    value = orjson.dumps(row)
    home = partition_for("BTCUSDT", partitions)
    assert home is not None
    stray = (home + 1) % partitions
    # The same decision, once keyed by symbol (Kafka's default partitioner) and once on another
    # partition (an unkeyed producer, a redrive without key, a partition count that changed).
    await produce(kafka, decisions_topic, [(b"BTCUSDT", value)])
    await produce_to(kafka, decisions_topic, stray, b"BTCUSDT", value)

    summary = await drain(kafka, topics, tmp_path / "outbox")

    events = [(p, orjson.loads(v)) for p, _, v in await read_records(kafka, topics.name("exec_events"))]
    assert [(p, e["signal_row_id"], e["source"]["partition"]) for p, e in events] == [(home, "twice", home)]
    (dead,) = [orjson.loads(v) for _, _, v in await read_records(kafka, topics.name("dlq"))]
    assert dead["error_class"] == "misrouted"
    assert dead["source"] == {"topic": decisions_topic, "partition": stray, "offset": 0}
    assert base64.b64decode(dead["value_b64"]) == value
    assert summary.events == 1


async def _burst_run(
    kafka: KafkaConfig, topics: TestTopics, outbox: Path, rows: list[dict[str, object]]
) -> tuple[list[dict[str, Any]], RunSummary]:
    await produce(kafka, topics.name("decisions"), [(b"burst", orjson.dumps(r)) for r in rows])
    # One batch for the whole burst (it is all there before the start), so the batch that fails
    # holds the orders that fill the rate wall and those the wall then refuses.
    worker = make_worker(kafka, topics, outbox, engine=modes_engine(), commit_interval_ms=500)
    summary = await asyncio.wait_for(worker.run(), timeout=60)
    events = []
    for _, _, value in await read_records(kafka, topics.name("exec_events")):
        event = orjson.loads(value)
        event["source"]["topic"] = "decisions"  # each run has its own topic names
        events.append(event)
    return events, summary


async def test_binding_rate_wall_processed_again_after_an_abort_gives_the_same_events(
    kafka: KafkaConfig, topics_factory: TopicsFactory, tmp_path: Path, monkeypatch: Any
) -> None:
    rows, expected = burst()
    # One partition: the rate wall sees the burst in its input order, in one batch.
    clean_topics, failing_topics = await topics_factory(partitions=1), await topics_factory(partitions=1)
    clean, clean_summary = await _burst_run(kafka, clean_topics, tmp_path / "clean", rows)
    assert Counter((e["status"], e["reason"] or "") for e in clean) == expected  # the wall binds

    real_commit = TransactionWriter.commit
    refused: list[int] = []

    async def commit_refused_once(self: TransactionWriter, producer: Any, partition: int, *rest: Any) -> Any:
        if refused:
            return await real_commit(self, producer, partition, *rest)
        refused.append(partition)
        real = producer.commit_transaction

        async def refuse() -> None:
            raise KafkaError("injected: the transaction's commit failed")

        producer.commit_transaction = refuse  # everything is sent, then the commit fails: abort
        try:
            return await real_commit(self, producer, partition, *rest)
        finally:
            producer.commit_transaction = real

    monkeypatch.setattr(TransactionWriter, "commit", commit_refused_once)
    again, again_summary = await _burst_run(kafka, failing_topics, tmp_path / "again", rows)

    assert refused == [0] and again_summary.aborted == 1 and clean_summary.aborted == 0
    assert again == clean
    # The audit log too: the day -> night switch is recorded once, not once per attempt.
    assert again_summary.mode_switches == clean_summary.mode_switches == 1
