"""The outbox mirror: a publish that fails pauses the partition's mirroring; it never stops the
loop that feeds it (a dead publisher task would leave its queue full and the worker waiting)."""

from __future__ import annotations

import asyncio
import threading
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


class GatedOutbox(Outbox):
    """Holds its first publish until released, and records each publish's lines."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.started, self.gate = threading.Event(), threading.Event()
        self.calls: list[list[str]] = []

    def publish(self, lines: Iterable[OutboxLine], stream: str = "default") -> int:
        lines = list(lines)
        self.calls.append([line.event_id for line in lines])
        if len(self.calls) == 1:
            self.started.set()
            self.gate.wait(timeout=10)
        return super().publish(lines, stream)


async def test_batches_waiting_for_the_disk_are_published_together_in_order(tmp_path: Path) -> None:
    outbox = GatedOutbox(tmp_path)
    summary = RunSummary()
    mirror = OutboxMirror(outbox, "exec-events.v1", WorkerMetrics(), summary)
    minute = 1_767_225_600_000

    def batch(n: int) -> list[OutboxLine]:
        return [OutboxLine("BTCUSDT", minute + n, f"e{n}.1", b'{"event_id":"e%d.1"}' % n)]

    await mirror.submit(0, batch(0), 1)
    assert await asyncio.to_thread(outbox.started.wait, 10)  # the first publish is held
    for n in range(1, 5):
        await mirror.submit(0, batch(n), None if n == 2 else n + 1)
    outbox.gate.set()
    await asyncio.wait_for(mirror.drain(0), timeout=10)
    assert outbox.calls == [["e0.1"], ["e1.1", "e2.1", "e3.1", "e4.1"]]  # one publish for the four
    assert outbox.mark("exec-events.v1", 0) == 5  # the last batch's mark
    assert summary.outbox_lines == 5
    assert [line.split(b'"')[3] for line in outbox.iter_lines()] == [b"e%d.1" % n for n in range(5)]
