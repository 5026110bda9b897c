"""Deterministic replay: byte-identical output across runs, file vs topic, 1 vs 4 partitions, Avro vs
JSONL; and the same events as a live consumer group of two workers (with every input role:
test_replay_every_input.py)."""

from __future__ import annotations

import io
import re
import signal
import subprocess
import uuid
from pathlib import Path

import orjson
from aiokafka.admin import NewTopic

from examples.gen_decisions import decisions
from tests.broker.conftest import TopicsFactory
from tests.broker.helpers import ROOT, cli, eventually, produce, read_records, spawn_worker
from worker.io.kafka import KafkaConfig


def replay(*args: str) -> tuple[str, str]:
    result = subprocess.run(cli("replay", *args), cwd=ROOT, capture_output=True, timeout=300, text=True)
    assert result.returncode == 0, result.stderr
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith("sha256:")
    return last, result.stdout


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted((root / "ready").rglob("*.jsonl"))}


def outbox_lines(root: Path) -> list[bytes]:
    """Every line of an outbox, file by file in path order (per symbol, in time order)."""
    return [line for content in tree(root).values() for line in content.splitlines()]


def write_sample(path: Path, values: list[bytes]) -> Path:
    path.write_bytes(b"\n".join(values) + b"\n")
    return path


def by_symbol(values: list[bytes]) -> list[tuple[bytes, bytes]]:
    """(key, value) pairs keyed by symbol, as upstream producers key decisions."""
    return [(orjson.loads(v)["symbol"].encode(), v) for v in values]


async def test_replay_digest_is_the_same_for_file_and_topics_of_any_partition_count(
    kafka: KafkaConfig, topics_factory: TopicsFactory, tmp_path: Path
) -> None:
    values = [orjson.dumps(d) for d in decisions(1_200, seed=51)]
    sample = write_sample(tmp_path / "decisions.jsonl", values)
    one = await topics_factory(partitions=1)
    four = await topics_factory(partitions=4)
    for topics in (one, four):
        await produce(kafka, topics.name("decisions"), by_symbol(values))

    file_a, out = replay("--from-file", str(sample), "--out", str(tmp_path / "a"))
    file_b, _ = replay("--from-file", str(sample), "--out", str(tmp_path / "b"))
    common = ["--bootstrap-servers", kafka.bootstrap_servers]
    topic_1, _ = replay("--from-topic", one.name("decisions"), "--out", str(tmp_path / "c"), *common)
    topic_4, _ = replay("--from-topic", four.name("decisions"), "--out", str(tmp_path / "d"), *common)

    assert file_a == file_b == topic_1 == topic_4
    assert "replayed 1200 decisions" in out
    assert tree(tmp_path / "a") == tree(tmp_path / "b") == tree(tmp_path / "c") == tree(tmp_path / "d")
    # A different seed changes the simulated latencies, so the digest must change too.
    other_seed, _ = replay("--from-file", str(sample), "--seed", "1")
    assert other_seed != file_a


async def test_replay_offset_ranges_select_a_subset(kafka: KafkaConfig, topics_factory: TopicsFactory) -> None:
    values = [orjson.dumps(d) for d in decisions(100, seed=52)]
    one = await topics_factory(partitions=1)
    await produce(kafka, one.name("decisions"), [(b"k", v) for v in values])
    common = ["--bootstrap-servers", kafka.bootstrap_servers, "--from-topic", one.name("decisions")]
    _, ranged = replay(*common, "--range", "0:10-29")
    assert "replayed 20 decisions" in ranged
    _, recent = replay(*common, "--from-ts", "4102444799999")  # nothing that recent
    assert "replayed 0 decisions" in recent


async def test_replay_of_an_avro_file_to_a_topic_streams_the_same_events_as_the_outbox(
    kafka: KafkaConfig, topics_factory: TopicsFactory, tmp_path: Path
) -> None:
    import fastavro

    rows = list(decisions(900, seed=53))
    jsonl = write_sample(tmp_path / "decisions.jsonl", [orjson.dumps(r) for r in rows])
    avro = tmp_path / "decisions.avro"
    schema = fastavro.parse_schema(orjson.loads((ROOT / "schemas/risk_contract/v1/decision.avsc").read_bytes()))
    optional = {"action": "NEW", "target_client_order_id": None, "new_px": None, "new_qty": None}
    buffer = io.BytesIO()
    fastavro.writer(buffer, schema, [{**optional, **r} for r in rows])
    avro.write_bytes(buffer.getvalue())
    topics = await topics_factory()
    # A topic of the replay's own: replay --to-topic refuses the live exec_events role.
    target = f"{topics.name('exec_events')}.replay"
    async with kafka.admin_session() as admin:
        await admin.create_topics([NewTopic(target, 6, 1)])

    from_json, _ = replay("--from-file", str(jsonl))
    common = ["--bootstrap-servers", kafka.bootstrap_servers, "--topics", str(topics.path)]
    from_avro, out = replay("--from-file", str(avro), "--out", str(tmp_path / "a"), "--to-topic", target, *common)

    assert from_avro == from_json
    published = [value for _, _, value in await read_records(kafka, target)]
    lines = outbox_lines(tmp_path / "a")
    assert f"-> {len(lines)} exec-events" in out and len(published) == len(lines) > 900 * 0.9
    # Keyed by symbol: each symbol's events arrive in the same (canonical) order as in the outbox.
    for symbol in {r["symbol"] for r in rows}:
        marker = f'"symbol":"{symbol}"'.encode()
        assert [v for v in published if marker in v] == [line for line in lines if marker in line]
    async with kafka.admin_session() as admin:
        await admin.delete_topics([target])


def without_source(line: bytes) -> bytes:
    event = orjson.loads(line)
    del event["source"]  # where the input was read: the only field that differs by construction
    return orjson.dumps(event, option=orjson.OPT_SORT_KEYS)


async def group_members(kafka: KafkaConfig, group: str) -> tuple[str, int]:
    """(state, member count) of a consumer group, from DescribeGroups."""
    async with kafka.admin_session() as admin:
        (response,) = await admin.describe_consumer_groups([group])
    _, _, state, _, _, members, *_ = response.groups[0]
    return state, len(members)


async def test_a_group_of_two_live_workers_emits_exactly_the_replays_events(
    kafka: KafkaConfig, topics_factory: TopicsFactory, tmp_path: Path
) -> None:
    # Backtest and live differ only in the shell: two worker processes sharing four partitions
    # commit the same exec-events as a one-process replay of the same file, event for event.
    values = [orjson.dumps(d) for d in decisions(1_000, seed=54)]
    sample = write_sample(tmp_path / "decisions.jsonl", values)
    topics = await topics_factory(partitions=4)
    group = f"g-{uuid.uuid4().hex[:8]}"
    workers = [spawn_worker(topics, kafka, group, tmp_path / f"outbox-{n}", "--max-batch", "50") for n in range(2)]
    try:
        # Both members hold partitions before any input exists, so both do part of the work.
        await eventually(lambda: _stable_with(kafka, group, 2), timeout_s=90, what="a group of two")
        await produce(kafka, topics.name("decisions"), by_symbol(values))
        await eventually(
            lambda: _events_at_least(kafka, topics.name("exec_events"), len(values)), timeout_s=120, what="events"
        )
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
    outputs = [worker.communicate(timeout=60) for worker in workers]
    assert [worker.returncode for worker in workers] == [0, 0], outputs[0][1][-2000:] + outputs[1][1][-2000:]
    handled = [input_messages(out) for out, _ in outputs]
    assert all(count > 0 for count in handled) and sum(handled) == len(values)

    live = [value for _, _, value in await read_records(kafka, topics.name("exec_events"))]
    replay("--from-file", str(sample), "--out", str(tmp_path / "replay"))
    replayed = outbox_lines(tmp_path / "replay")
    assert len(live) == len(replayed) == len(values)
    assert sorted(map(without_source, live)) == sorted(map(without_source, replayed))


def input_messages(summary: bytes) -> int:
    """The `input messages` count of a worker's run summary."""
    match = re.search(rb"input messages\s+(\d+)", summary)
    assert match is not None, summary[-2000:]
    return int(match.group(1))


async def _stable_with(kafka: KafkaConfig, group: str, members: int) -> bool:
    return await group_members(kafka, group) == ("Stable", members)


async def _events_at_least(kafka: KafkaConfig, topic: str, count: int) -> bool:
    return len(await read_records(kafka, topic)) >= count
