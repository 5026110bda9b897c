"""The outbox mirror: a publish that fails pauses the partition's mirroring; it never stops the
loop that feeds it (a dead publisher task would leave its queue full and the worker waiting)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from pathlib import Path

from worker.io.outbox import Outbox, OutboxLine
from worker.runtime.metrics import WorkerMetrics
from worker.runtime.mirror import OutboxMirror
from worker.runtime.summary import RunSummary


class BrokenOutbox(Outbox):
    def publish(self, lines: Iterable[OutboxLine], stream: str = "default") -> int:
        raise ValueError("a line it cannot read")


async def test_a_failing_publish_pauses_mirroring_without_blocking_the_loop(tmp_path: Path) -> None:
    metrics = WorkerMetrics()
    mirror = OutboxMirror(BrokenOutbox(tmp_path), "exec-events.v1", metrics, RunSummary())
    line = OutboxLine("BTCUSDT", 1_767_225_600_000, "a.1", b'{"event_id":"a.1"}')
    # Far more batches than the queue holds: each submit must return.
    for offset in range(40):
        await asyncio.wait_for(mirror.submit(0, [line], offset + 1), timeout=10)
    await asyncio.wait_for(mirror.drain(0), timeout=10)
    assert metrics.outbox_errors._value.get() == 1
    assert Outbox(tmp_path).mark("exec-events.v1", 0) == 0  # the mark never moved
