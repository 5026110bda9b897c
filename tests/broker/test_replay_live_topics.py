"""`replay --to-topic` never writes into live output unless forced: a topic the topics file names as
a live role, or one that holds a live worker's transactional output (found by its markers)."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import orjson
from aiokafka.admin import NewTopic

from examples.gen_decisions import decisions
from tests.broker.conftest import TopicsFactory
from tests.broker.helpers import ROOT, cli, drain, end_offsets, produce, read_records
from worker.io.kafka import KafkaConfig
from worker.io.live_topics import transaction_markers

COUNT = 60


def replay(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cli("replay", *args), cwd=ROOT, capture_output=True, timeout=300, text=True)


def sample(tmp_path: Path) -> tuple[Path, list[bytes]]:
    values = [orjson.dumps(d) for d in decisions(COUNT, seed=71)]
    path = tmp_path / "decisions.jsonl"
    path.write_bytes(b"\n".join(values) + b"\n")
    return path, values


async def test_a_live_role_is_refused_unless_forced(
    kafka: KafkaConfig, topics_factory: TopicsFactory, tmp_path: Path
) -> None:
    topics = await topics_factory(partitions=1)
    path, _ = sample(tmp_path)
    common = ["--from-file", str(path), "--topics", str(topics.path), "--bootstrap-servers", kafka.bootstrap_servers]
    for target, role in (
        ("exec_events", "exec_events"),  # by role
        (topics.name("exec_events"), "exec_events"),  # by name
        (topics.name("dlq"), "dlq"),
    ):
        refused = replay(*common, "--to-topic", target)
        assert refused.returncode == 2, refused.stdout
        assert f"is the {role} topic of the topics file" in refused.stderr
        assert "--force-into-live-topic" in refused.stderr and "refused" in refused.stderr
        assert "sha256:" not in refused.stdout  # nothing was replayed
    assert sum((await end_offsets(kafka, topics.name("exec_events"))).values()) == 0
    assert sum((await end_offsets(kafka, topics.name("dlq"))).values()) == 0

    forced = replay(*common, "--to-topic", "exec_events", "--force-into-live-topic")
    assert forced.returncode == 0, forced.stderr
    assert "warning: --force-into-live-topic" in forced.stderr
    assert len(await read_records(kafka, topics.name("exec_events"))) == COUNT


async def test_a_topic_with_a_live_workers_transactional_output_is_refused(
    kafka: KafkaConfig, topics_factory: TopicsFactory, tmp_path: Path
) -> None:
    live = await topics_factory(partitions=2)
    path, values = sample(tmp_path)
    await produce(kafka, live.name("decisions"), [(orjson.loads(v)["symbol"].encode(), v) for v in values])
    summary = await drain(kafka, live, tmp_path / "outbox")
    assert summary.events == COUNT
    output = live.name("exec_events")
    markers = await transaction_markers(kafka, output)
    assert markers.total >= 1  # at least one committed transaction on some partition

    # Another deployment's topics file does not name the live output: the markers give it away.
    other = await topics_factory(partitions=2)
    common = ["--from-file", str(path), "--topics", str(other.path), "--bootstrap-servers", kafka.bootstrap_servers]
    before = await end_offsets(kafka, output)
    refused = replay(*common, "--to-topic", output)
    assert refused.returncode == 2, refused.stdout
    assert "holds committed transactional output" in refused.stderr
    assert await end_offsets(kafka, output) == before

    # A topic of the replay's own is fine, and stays fine: a replay writes no markers.
    own = f"replay-own-{uuid.uuid4().hex[:8]}"
    async with kafka.admin_session() as admin:
        await admin.create_topics([NewTopic(own, 2, 1)])
    try:
        for _ in range(2):
            ok = replay(*common, "--to-topic", own)
            assert ok.returncode == 0, ok.stderr
        assert (await transaction_markers(kafka, own)).total == 0
        assert len(await read_records(kafka, own)) == 2 * COUNT
    finally:
        async with kafka.admin_session() as admin:
            await admin.delete_topics([own])

    forced = replay(*common, "--to-topic", output, "--force-into-live-topic")
    assert forced.returncode == 0, forced.stderr
    assert sum((await end_offsets(kafka, output)).values()) == sum(before.values()) + COUNT
