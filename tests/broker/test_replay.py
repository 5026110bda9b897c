"""Deterministic replay: byte-identical output across runs, file vs topic, 1 vs 4 partitions."""

from __future__ import annotations

import subprocess
from pathlib import Path

import orjson

from examples.gen_decisions import decisions
from tests.broker.conftest import TopicsFactory
from tests.broker.helpers import ROOT, cli, produce
from worker.io.kafka import KafkaConfig


def replay(*args: str) -> tuple[str, str]:
    result = subprocess.run(cli("replay", *args), cwd=ROOT, capture_output=True, timeout=300, text=True)
    assert result.returncode == 0, result.stderr
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith("sha256:")
    return last, result.stdout


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted((root / "ready").rglob("*.jsonl"))}


async def test_replay_digest_is_the_same_for_file_and_topics_of_any_partition_count(
    kafka: KafkaConfig, topics_factory: TopicsFactory, tmp_path: Path
) -> None:
    values = [orjson.dumps(d) for d in decisions(1_200, seed=51)]
    sample = tmp_path / "decisions.jsonl"
    sample.write_bytes(b"\n".join(values) + b"\n")
    one = await topics_factory(partitions=1)
    four = await topics_factory(partitions=4)
    for topics in (one, four):
        await produce(kafka, topics.name("decisions"), [(orjson.loads(v)["symbol"].encode(), v) for v in values])

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
