"""A three-broker KRaft cluster (`ops/kafka up --brokers 3`, replication 3, min.insync.replicas 2)
loses the broker that leads an exec-events partition (kill -9) in the middle of a worker run:
nothing is lost, nothing doubled, and the worker finishes the run.

The cluster is this module's own (state in a temporary directory, ports 19094-19099); it is
started once and stopped after. The figures of a larger run are in BENCHMARKS.md (bench/broker_loss.py).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.broker.helpers import ROOT, TestTopics, eventually, spawn_worker
from tests.broker.test_process import assert_exactly_once, event_count, produce_sample
from worker.io.kafka import KafkaConfig
from worker.io.kafka_security import KafkaSecurity
from worker.io.topics import apply_topics, write_variant

pytestmark = pytest.mark.timeout(600)

CLUSTER_PORT = 19094


class Cluster:
    def __init__(self, home: Path, bootstrap: str) -> None:
        self.home = home
        self.kafka = KafkaConfig(bootstrap, connect_timeout_s=30, security=KafkaSecurity())

    def pid(self, node_id: int) -> int:
        return int((self.home / f"node{node_id}" / "kafka.pid").read_text().strip())

    async def leader(self, topic: str, partition: int) -> int:
        async with self.kafka.admin_session() as admin:
            (described,) = await admin.describe_topics([topic])
        return int(next(p["leader"] for p in described["partitions"] if p["partition"] == partition))


def ops_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAFKA_")}
    env.update(
        EXECWORKER_KAFKA_HOME=str(home),
        EXECWORKER_KAFKA_PORT=str(CLUSTER_PORT),
        EXECWORKER_KAFKA_HEAP="-Xms128m -Xmx384m",
    )
    return env


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    home = tmp_path_factory.mktemp("kafka-3")
    ops = [str(ROOT / "ops" / "kafka")]
    up = subprocess.run([*ops, "up", "--brokers", "3"], env=ops_env(home), capture_output=True, text=True, timeout=300)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        yield Cluster(home, up.stdout.strip().splitlines()[-1])
    finally:
        subprocess.run([*ops, "down"], env=ops_env(home), capture_output=True, timeout=120)


async def test_leader_of_an_exec_events_partition_killed_mid_run(cluster: Cluster, tmp_path: Path) -> None:
    kafka = cluster.kafka
    await kafka.check_reachable()
    suffix = uuid.uuid4().hex[:8]
    path = tmp_path / "topics.yaml"
    file = write_variant(ROOT / "topics.yaml", path, suffix, partitions=3)
    async with kafka.admin_session() as admin:
        await apply_topics(admin, file, replication_override=3)
    topics = TestTopics(path, file, suffix)
    values = await produce_sample(kafka, topics, 2000, seed=41)
    exec_topic = topics.name("exec_events")
    victim = await cluster.leader(exec_topic, 0)

    group, outbox = f"g-{uuid.uuid4().hex[:8]}", tmp_path / "outbox"
    started = time.monotonic()
    # Small transactions, so that the kill lands with work committed before it and after it.
    worker = spawn_worker(topics, kafka, group, outbox, "--until-drained", "--max-batch", "20")
    try:
        await eventually(lambda: _more_than(kafka, topics, 300), timeout_s=120, what="300 exec-events")
        assert worker.poll() is None, "the worker finished before the broker could be killed"
        os.kill(cluster.pid(victim), signal.SIGKILL)
        killed_at = time.monotonic()
        await eventually(lambda: _led_by_other(cluster, exec_topic, victim), timeout_s=60, what="a new leader")
        failover_s = time.monotonic() - killed_at
        _, err = await asyncio.to_thread(worker.communicate, timeout=300)
    finally:
        if worker.poll() is None:
            worker.kill()
    assert worker.returncode == 0, err.decode()[-3000:]
    print(
        f"\nbroker-loss: node {victim} killed after >300/2000 events; new leader in {failover_s:.1f}s; "
        f"run {time.monotonic() - started:.1f}s"
    )
    await assert_exactly_once(kafka, topics, values, outbox)


async def _more_than(kafka: KafkaConfig, topics: TestTopics, threshold: int) -> bool:
    return await event_count(kafka, topics) > threshold


async def _led_by_other(cluster: Cluster, topic: str, victim: int) -> bool:
    try:
        return await cluster.leader(topic, 0) not in (victim, -1)
    except Exception:
        return False
