"""A live worker's ready/ directory, watched while it runs: a published file never changes, late
events land in numbered segments, and after the drain ready/ holds exactly the committed events."""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections import Counter
from pathlib import Path

import orjson

from examples.gen_decisions import decisions
from tests.broker.conftest import TestTopics
from tests.broker.helpers import make_worker, produce, read_records
from worker.io.kafka import KafkaConfig
from worker.io.outbox import Outbox


def out_of_order(count: int, seed: int) -> list[bytes]:
    """Sample decisions over ~20 minutes of event time; one in eight arrives up to 4 minutes late."""
    rng = random.Random(seed)
    rows = list(decisions(count, seed))
    start = rows[0]["event_ts_ms"]
    for index, row in enumerate(rows):
        row["event_ts_ms"] = start + index * 1_200_000 // count
        if rng.random() < 0.125:
            row["event_ts_ms"] -= rng.randint(1, 240_000)
    return [orjson.dumps(row) for row in rows]


async def test_a_tailer_of_ready_never_sees_a_published_file_change(
    kafka: KafkaConfig, topics: TestTopics, tmp_path: Path
) -> None:
    values = out_of_order(1_500, seed=81)
    await produce(kafka, topics.name("decisions"), [(orjson.loads(v)["symbol"].encode(), v) for v in values])
    root = tmp_path / "outbox"
    worker = make_worker(kafka, topics, root, max_batch=25, outbox_grace_ms=30_000)
    seen: dict[Path, str] = {}
    changed: list[Path] = []
    polls = 0

    def look() -> None:
        for path in Outbox(root).ready_files():
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            if seen.setdefault(path, digest) != digest:
                changed.append(path)

    async def tail() -> None:
        nonlocal polls
        while True:
            await asyncio.to_thread(look)
            polls += 1
            await asyncio.sleep(0.02)  # a polling reader: nothing to await but the next look

    tailer = asyncio.create_task(tail())
    try:
        await asyncio.wait_for(worker.run(), timeout=180)
    finally:
        tailer.cancel()
    seen_while_running = len(seen)
    await asyncio.to_thread(look)

    assert changed == []
    # Minutes were published during the run (the watermark passed them), not only at the drain.
    assert polls > 5 and seen_while_running > 10, (polls, seen_while_running, len(seen))
    assert any(path.name.count(".") == 2 for path in seen), "no late segment was made"
    committed = Counter(value for _, _, value in await read_records(kafka, topics.name("exec_events")))
    assert Counter(Outbox(root).iter_lines()) == committed  # after the drain: exactly the topic
    assert Outbox(root).open_files() == []
