"""Helpers for broker tests: produce, read committed records, offsets, spawn a worker process."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from worker.core.backtest import BacktestExecutor
from worker.core.engine import ExecutionEngine
from worker.io.kafka import KafkaConfig, read_committed_topic, topic_partitions
from worker.io.topics import TopicsFile
from worker.policy.rng import Rng
from worker.runtime.settings import WorkerSettings
from worker.runtime.summary import RunSummary
from worker.runtime.worker import ExecWorker

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class TestTopics:
    __test__ = False  # a fixture value, not a test class

    path: Path
    file: TopicsFile
    suffix: str

    def name(self, role: str) -> str:
        return self.file.role(role).name


async def produce(kafka: KafkaConfig, topic: str, values: Iterable[tuple[bytes | None, bytes]]) -> None:
    producer = kafka.producer(acks="all", enable_idempotence=True, linger_ms=5)
    await producer.start()
    try:
        futures = [await producer.send(topic, value=value, key=key) for key, value in values]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def read_records(kafka: KafkaConfig, topic: str) -> list[tuple[int, int, bytes]]:
    """(partition, offset, value) of every committed record."""
    return [(r.partition, r.offset, r.value) for r in await read_committed_topic(kafka, topic)]


async def committed_offsets(kafka: KafkaConfig, group: str, topic: str) -> dict[int, int | None]:
    consumer = kafka.consumer(group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = await topic_partitions(consumer, topic)
        return {tp.partition: await consumer.committed(tp) for tp in tps}
    finally:
        await consumer.stop()


async def end_offsets(kafka: KafkaConfig, topic: str) -> dict[int, int]:
    consumer = kafka.consumer(group_id=None)
    await consumer.start()
    try:
        tps = await topic_partitions(consumer, topic)
        ends = await consumer.end_offsets(tps)
        return {tp.partition: ends[tp] for tp in tps}
    finally:
        await consumer.stop()


async def eventually(check: Callable[[], Awaitable[bool]], timeout_s: float = 60, what: str = "") -> None:
    """Polls `check` until it is true; fails after `timeout_s`. For conditions with no event."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"timed out after {timeout_s}s waiting for {what or check}")
        await asyncio.sleep(0.2)


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "worker", *args]


def run_command(topics: TestTopics, kafka: KafkaConfig, group: str, outbox: Path, *extra: str) -> list[str]:
    """`execworker run` on the test's topics, broker and outbox, without a metrics endpoint."""
    return cli(
        "run",
        "--bootstrap-servers",
        kafka.bootstrap_servers,
        "--topics",
        str(topics.path),
        "--group",
        group,
        "--outbox",
        str(outbox),
        "--metrics-port",
        "0",
        *extra,
    )


def spawn_worker(
    topics: TestTopics, kafka: KafkaConfig, group: str, outbox: Path, *extra: str, stderr: Any = subprocess.PIPE
) -> subprocess.Popen[bytes]:
    """A worker process. Its stderr (the log, with an order line per failed order) is a pipe that
    the caller must read, or a worker writing a full pipe blocks: pass `stderr=subprocess.DEVNULL`
    when the log is not wanted."""
    return subprocess.Popen(
        run_command(topics, kafka, group, outbox, *extra),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=stderr,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def make_worker(
    kafka: KafkaConfig,
    topics: TestTopics,
    outbox: Path,
    group: str | None = None,
    engine: ExecutionEngine | None = None,
    **settings: Any,
) -> ExecWorker:
    """An in-process worker on the test's topics (backtest executor unless `engine` says else)."""
    group = group or f"g-{uuid.uuid4().hex[:8]}"
    config = WorkerSettings(
        bootstrap_servers=kafka.bootstrap_servers,
        topics_file=topics.path,
        schemas_dir=ROOT / "schemas",
        group_id=group,
        transactional_prefix=group,
        outbox_dir=outbox,
        metrics_port=0,
        **{"until_drained": True, **settings},
    )
    return ExecWorker(config, topics.file, engine or ExecutionEngine(BacktestExecutor(Rng(0))))


async def drain(
    kafka: KafkaConfig,
    topics: TestTopics,
    outbox: Path,
    group: str | None = None,
    engine: ExecutionEngine | None = None,
    **settings: Any,
) -> RunSummary:
    """Runs a worker until its input is drained (two minutes at most)."""
    worker = make_worker(kafka, topics, outbox, group, engine, **settings)
    return await asyncio.wait_for(worker.run(), timeout=120)
