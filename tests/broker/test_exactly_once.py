"""Exactly-once against the real broker: a fenced zombie, and a small chaos run (kill -9,
rebalances, a broker restart, venue faults). `make chaos` runs the full-size chaos."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import orjson

from bench.chaos import ChaosConfig, run_chaos
from examples.gen_decisions import decisions
from tests.broker.helpers import TestTopics, eventually, make_worker, produce, read_records
from worker.io.kafka import KafkaConfig
from worker.runtime.worker import ExecWorker


def worker(kafka: KafkaConfig, topics: TestTopics, group: str, outbox: Path, until_drained: bool) -> ExecWorker:
    return make_worker(kafka, topics, outbox, group, until_drained=until_drained, max_batch=20)


def keyed(values: list[bytes]) -> list[tuple[bytes | None, bytes]]:
    return [(orjson.loads(v)["symbol"].encode(), v) for v in values]


async def test_a_zombie_owner_is_fenced_and_commits_nothing(
    kafka: KafkaConfig, topics: TestTopics, tmp_path: Path
) -> None:
    first = [orjson.dumps(d) for d in decisions(200, seed=41)]
    second = [orjson.dumps(d) for d in decisions(200, seed=42)]
    group = f"g-{uuid.uuid4().hex[:8]}"
    await produce(kafka, topics.name("decisions"), keyed(first))
    zombie = worker(kafka, topics, group, tmp_path / "outbox", until_drained=False)
    zombie_task = asyncio.create_task(zombie.run())

    async def first_batch_done() -> bool:
        return len(await read_records(kafka, topics.name("exec_events"))) == len(first)

    await eventually(first_batch_done, what="the first decisions executed")

    # A new owner appears for every partition (as after a rebalance the zombie missed): starting
    # a producer with the same transactional id bumps the epoch and fences the old one.
    partitions = topics.file.role("decisions").partitions
    usurpers = [kafka.producer(transactional_id=f"{group}-p{p}", enable_idempotence=True) for p in range(partitions)]
    for producer in usurpers:
        await producer.start()
    await produce(kafka, topics.name("decisions"), keyed(second))

    async def zombie_fenced() -> bool:
        fenced = zombie.metrics.batches.labels("fenced")._value.get()
        return bool(fenced >= 1)

    await eventually(zombie_fenced, what="the zombie to be fenced")
    zombie.request_stop()
    await asyncio.wait_for(zombie_task, timeout=60)
    for producer in usurpers:
        await producer.stop()
    rows = {orjson.loads(v)["signal_row_id"] for _, _, v in await read_records(kafka, topics.name("exec_events"))}
    assert not rows & {orjson.loads(v)["signal_row_id"] for v in second}, "a fenced zombie committed events"

    # The legitimate owner finishes the job, exactly once.
    heir = worker(kafka, topics, group, tmp_path / "outbox", until_drained=True)
    await asyncio.wait_for(heir.run(), timeout=120)
    events = [orjson.loads(v) for _, _, v in await read_records(kafka, topics.name("exec_events"))]
    assert sorted(e["signal_row_id"] for e in events) == sorted(
        orjson.loads(v)["signal_row_id"] for v in first + second
    )


async def test_small_chaos_run_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    config = ChaosConfig(
        decisions=1_500, partitions=6, workers=2, kills=4, graceful_restarts=2, pauses=1, broker_restart=True
    )
    report = await run_chaos(config, tmp_path)
    assert (report.kills, report.pauses, report.broker_restarts) == (4, 1, 1)
    assert report.venue_orders > 1_000  # most decisions pass the gates and reach the venue
    assert {"late", "duplicate", "lost_answer"} <= set(report.faults_injected)
    # All the outcomes at once, so that a failure shows every count.
    outcomes = {
        "accepted_twice": report.accepted_twice,  # by the worker's own requests
        "terminal_twice": report.terminal_twice,
        "lost": report.lost,
        "missing_at_venue": report.missing_at_venue,
        "outbox_missing": report.outbox_missing,
        "outbox_extra": report.outbox_extra,
        "parts_left": report.parts_left,
        "exits_unaccounted": report.exits_unaccounted,
    }
    unaccounted = [e for e in report.exits if e.cause == "unaccounted"]
    assert outcomes == dict.fromkeys(outcomes, 0), (outcomes, unaccounted, report.copy_accepts, report.deliveries)
