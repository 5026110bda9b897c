"""Publishing committed exec-events to the outbox off the hot path, in order, per partition.

The loop hands each committed batch to its partition's publisher and goes on with the next
batch; the publisher writes the lines (fsync + rename per file, the slow part) and then moves
the partition's mark. Order is kept because each partition has one queue and one task. On
revoke and on shutdown the queue is drained first, so the next owner's catch-up starts from an
exact mark, and every minute the partition still holds open is published (a revoke or a
shutdown leaves nothing unpublished; see `Outbox.drain`).

If a publish fails (disk full, permissions, a line it cannot read), the partition's mirroring stops and its mark stays
where it was: nothing after the failure is published out of order, and the next assignment
re-publishes everything from the mark (see `worker.runtime.recovery`).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from worker.io.outbox import Outbox, OutboxLine, stream_of
from worker.runtime.metrics import WorkerMetrics
from worker.runtime.summary import RunSummary

log = logging.getLogger(__name__)

# Committed batches a partition may have waiting for the disk before the loop waits too:
# enough to ride out an fsync stall, small enough that a revoke drains in well under a second.
_QUEUE_BATCHES = 8


@dataclass
class _Publisher:
    queue: asyncio.Queue[tuple[list[OutboxLine], int | None]] = field(
        default_factory=lambda: asyncio.Queue(maxsize=_QUEUE_BATCHES)
    )
    task: asyncio.Task[None] | None = None
    failed: bool = False


class OutboxMirror:
    def __init__(self, outbox: Outbox, exec_topic: str, metrics: WorkerMetrics, summary: RunSummary) -> None:
        self._outbox = outbox
        self._topic = exec_topic
        self._metrics = metrics
        self._summary = summary
        self._publishers: dict[int, _Publisher] = {}

    async def submit(self, partition: int, lines: list[OutboxLine], next_mark: int | None) -> None:
        """Queues a committed batch; waits only when the partition is `_QUEUE_BATCHES` behind."""
        publisher = self._publishers.get(partition)
        if publisher is None:
            publisher = _Publisher()
            publisher.task = asyncio.create_task(self._run(partition, publisher))
            self._publishers[partition] = publisher
        if publisher.failed:
            return  # mark frozen; the next assignment re-publishes from it
        await publisher.queue.put((lines, next_mark))

    async def drain(self, partition: int) -> None:
        """Waits until everything queued for the partition is on disk, stops its task, and
        publishes the partition's open minutes (also those a killed previous owner left)."""
        publisher = self._publishers.pop(partition, None)
        if publisher is not None:
            await publisher.queue.join()
            if publisher.task is not None:
                publisher.task.cancel()
                await asyncio.gather(publisher.task, return_exceptions=True)
            if publisher.failed:
                return  # the disk failed: the next owner re-publishes from the mark
        try:
            await asyncio.to_thread(self._outbox.drain, stream_of(self._topic, partition))
        except Exception as exc:  # as in _run: report, never stop the loop
            self._metrics.outbox_errors.inc()
            log.error("outbox drain for partition %d failed (%s); its open minutes stay open", partition, exc)

    async def drain_all(self) -> None:
        for partition in sorted(self._publishers):
            await self.drain(partition)

    async def _run(self, partition: int, publisher: _Publisher) -> None:
        while True:
            lines, next_mark = await publisher.queue.get()
            taken = 1
            # Every batch already waiting joins this publish: one round of file writes, fsyncs
            # and one mark for all of them (they are consecutive, so the last mark covers them).
            while not publisher.queue.empty():
                more, mark = publisher.queue.get_nowait()
                lines = lines + more
                next_mark = mark if mark is not None else next_mark
                taken += 1
            try:
                if not publisher.failed:
                    written = await asyncio.to_thread(self._publish, partition, lines, next_mark)
                    self._summary.outbox_lines += written
                    self._metrics.outbox_published(written)
            except Exception as exc:  # any failure pauses the publisher, none kills it
                # A dead task would leave the queue full and the loop waiting on it forever.
                publisher.failed = True
                self._metrics.outbox_errors.inc()
                log.error(
                    "outbox publish for partition %d failed (%s); mirroring paused at the last mark, "
                    "it resumes from there on the next assignment",
                    partition,
                    exc,
                )
            finally:
                for _ in range(taken):
                    publisher.queue.task_done()

    def _publish(self, partition: int, lines: list[OutboxLine], next_mark: int | None) -> int:
        """In a worker thread: the lines, then the mark that says they are on disk."""
        written = self._outbox.publish(lines, stream_of(self._topic, partition))
        if next_mark is not None:
            self._outbox.set_mark(self._topic, partition, next_mark)
        return written
