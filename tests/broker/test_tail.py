"""`execworker tail`: a group resumes exactly where it stopped; kcat-like partition and offsets;
Avro printed decoded."""

from __future__ import annotations

import signal
import subprocess
import uuid
from pathlib import Path

import orjson

from examples.gen_decisions import decisions
from tests.broker.conftest import TopicsFactory
from tests.broker.helpers import ROOT, cli, committed_offsets, eventually, produce
from worker.codec.json_codec import decode_json
from worker.contract.events import ExecEvent
from worker.core.backtest import BacktestExecutor
from worker.core.engine import ExecutionEngine
from worker.io.kafka import KafkaConfig
from worker.io.topics import codec_for
from worker.policy.rng import Rng
from worker.runtime.replay import list_sink, replay


def tail(*args: str) -> list[bytes]:
    result = subprocess.run(cli("tail", *args), cwd=ROOT, capture_output=True, timeout=120)
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    return result.stdout.splitlines()


def spawn(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(cli(*args), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def values(first: int, count: int) -> list[tuple[bytes, bytes]]:
    return [(f"S{n % 5}".encode(), orjson.dumps({"n": n})) for n in range(first, first + count)]


def numbers(lines: list[bytes]) -> list[int]:
    return [orjson.loads(line)["n"] for line in lines]


async def test_a_restarted_tail_group_neither_repeats_nor_skips(
    kafka: KafkaConfig, topics_factory: TopicsFactory
) -> None:
    topics = await topics_factory(partitions=3)
    topic = topics.name("exec_events")
    group = f"tail-{uuid.uuid4().hex[:8]}"
    common = ["--topic", topic, "--group", group, "--topics", str(topics.path)]
    await produce(kafka, topic, values(0, 120))

    first = tail(*common, "--limit", "45")
    assert len(first) == 45
    second = tail(*common, "--exit-at-end")
    assert sorted(numbers(first + second)) == list(range(120))  # nothing twice, nothing missed
    assert tail(*common, "-e") == []  # at the end: nothing new

    # A following tail stopped by SIGTERM while records arrive, then resumed.
    follower = spawn("tail", *common)
    try:
        await produce(kafka, topic, values(120, 60))
        # Once it has committed part of the new records, stop it while more arrive.
        await eventually(lambda: _committed_past(kafka, group, topic, 120), timeout_s=60, what="a commit")
        await produce(kafka, topic, values(180, 60))
    finally:
        follower.send_signal(signal.SIGTERM)
    rest, err = follower.communicate(timeout=60)
    assert follower.returncode == 0, err.decode()[-2000:]
    stopped = rest.splitlines()
    resumed = tail(*common, "-e")
    seen = numbers(stopped + resumed)
    assert sorted(seen) == list(range(120, 240)), (len(stopped), len(resumed))


async def _committed_past(kafka: KafkaConfig, group: str, topic: str, total: int) -> bool:
    return sum(offset or 0 for offset in (await committed_offsets(kafka, group, topic)).values()) > total


async def test_kcat_like_partition_and_offsets(kafka: KafkaConfig, topics_factory: TopicsFactory) -> None:
    topics = await topics_factory(partitions=2)
    topic = topics.name("exec_events")
    # All to partition 1 (explicitly, not by key hash).
    producer = kafka.producer(acks="all")
    await producer.start()
    try:
        for n in range(10):
            await producer.send_and_wait(topic, orjson.dumps({"n": n}), partition=1)
    finally:
        await producer.stop()
    common = ["--topic", topic, "--topics", str(topics.path), "-e"]
    assert numbers(tail(*common, "-p", "1", "-o", "7")) == [7, 8, 9]
    assert numbers(tail(*common, "-p", "1", "-o", "-2")) == [8, 9]
    assert tail(*common, "-p", "0", "-o", "beginning") == []
    assert numbers(tail(*common, "--from-beginning")) == list(range(10))
    bad = subprocess.run(cli("tail", *common, "-p", "5"), cwd=ROOT, capture_output=True, timeout=60)
    assert bad.returncode == 2 and b"no partition 5" in bad.stderr


async def test_avro_records_are_printed_decoded(kafka: KafkaConfig, topics_factory: TopicsFactory) -> None:
    topics = await topics_factory(exec_events="avro")
    lines: list = []
    await replay(
        ExecutionEngine(BacktestExecutor(Rng(0))),
        [orjson.dumps(d) for d in decisions(20, seed=5)],
        [list_sink(lines)],
    )
    events = [decode_json(ExecEvent, line.payload) for line in lines]
    codec = codec_for(topics.file.role("exec_events"), ROOT / "schemas")
    await produce(kafka, topics.name("exec_events"), [(e.symbol.encode(), codec.encode(e)) for e in events])
    printed = tail("--topic", "exec_events", "--topics", str(topics.path), "--from-beginning", "-e")
    assert sorted(decode_json(ExecEvent, line).event_id for line in printed) == sorted(e.event_id for e in events)


async def _events(count: int, seed: int) -> list[ExecEvent]:
    lines: list = []
    await replay(
        ExecutionEngine(BacktestExecutor(Rng(0))),
        [orjson.dumps(d) for d in decisions(count, seed=seed)],
        [list_sink(lines)],
    )
    return [decode_json(ExecEvent, line.payload) for line in lines]


def _report_orders(path: Path) -> int:
    return orjson.loads(path.read_bytes())["orders"] if path.exists() else -1


async def test_report_follow_keeps_the_report_current_from_the_topic(
    kafka: KafkaConfig, topics_factory: TopicsFactory, tmp_path: Path
) -> None:
    topics = await topics_factory(partitions=2)
    topic = topics.name("exec_events")
    first, second = await _events(60, seed=8), await _events(40, seed=9)
    await produce(kafka, topic, [(e.symbol.encode(), e.model_dump_json().encode()) for e in first])
    out = tmp_path / "report.json"
    follower = spawn(
        "report", "--topic", topic, "--topics", str(topics.path), "--follow", "--every-s", "0", "--json", str(out)
    )
    try:
        await eventually(lambda: _is(out, 60), timeout_s=60, what="the first 60 orders in the report")
        await produce(kafka, topic, [(e.symbol.encode(), e.model_dump_json().encode()) for e in second])
        await eventually(lambda: _is(out, 100), timeout_s=60, what="the report to follow to 100 orders")
    finally:
        follower.send_signal(signal.SIGTERM)
    _, err = follower.communicate(timeout=60)
    assert follower.returncode == 0, err.decode()[-2000:]
    assert orjson.loads(out.read_bytes())["events"] == 100


async def _is(path: Path, orders: int) -> bool:
    return _report_orders(path) == orders
