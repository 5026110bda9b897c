"""A pipeline per owned partition: the poll loop hands records to the partition's lane and polls on.

Why: a loop that waits for every partition's commit before its next poll makes a record that
arrives during a commit wait for the slowest partition's transaction, then for its own. A lane
runs one partition's batches one transaction at a time, in offset order, while the loop keeps
fetching for every partition; batches that queued up during a transaction are merged into the
next one, so load makes transactions larger, not queues longer.

Order and exactly-once: one lane per owner, one transaction at a time, under the owner's `busy`
lock (which reconcile and release also take). A batch carries the owner's epoch from the moment
it was fetched; a rewind (an aborted transaction) bumps the epoch and seeks the consumer back to
the committed offsets, so the batches fetched before it are dropped here, not processed twice or
out of order. A released owner's lane drops whatever it still holds.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeAlias

from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

from worker.runtime.partition import PartitionOwner

log = logging.getLogger(__name__)

Record: TypeAlias = "ConsumerRecord[bytes, bytes]"
Records: TypeAlias = dict[TopicPartition, list[Record]]

# Batches a lane may hold before the poll loop waits for it: enough to keep a transaction's worth
# queued behind the one in flight, few enough that a revoke or a rewind drops little.
LANE_DEPTH = 4


@dataclass(frozen=True)
class Batch:
    epoch: int  # the owner's epoch when the records were fetched
    records: Records


def merged(batches: list[Batch]) -> Records:
    """Consecutive batches of one partition as one: per topic-partition, in fetch order."""
    out: Records = {}
    for batch in batches:
        for tp, records in batch.records.items():
            out.setdefault(tp, []).extend(records)
    return out


class Lane:
    def __init__(
        self,
        owner: PartitionOwner,
        process: Callable[[PartitionOwner, Records], Awaitable[None]],
        on_error: Callable[[BaseException], None],
    ) -> None:
        self.owner = owner
        self._process = process
        self._on_error = on_error
        self._queue: deque[Batch] = deque()
        self._queued = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._working = False
        self._closed = False
        self.task = asyncio.create_task(self._run(), name=f"lane-p{owner.partition}")

    def idle(self) -> bool:
        return not self._queue and not self._working

    @property
    def queued(self) -> int:
        """Batches waiting behind the one in flight (or for the lane to start)."""
        return len(self._queue)

    @property
    def working(self) -> bool:
        return self._working

    async def put(self, batch: Batch) -> None:
        """Queues a batch; waits while the lane holds `LANE_DEPTH` batches."""
        while len(self._queue) >= LANE_DEPTH and not self._closed:
            self._room.clear()
            await self._room.wait()
        if not self._closed:
            self._queue.append(batch)
            self._queued.set()

    def close(self) -> None:
        """Drops what is queued; the batch in flight finishes, then the task ends."""
        self._closed = True
        self._queue.clear()
        self._queued.set()
        self._room.set()

    async def _run(self) -> None:
        owner = self.owner
        while True:
            await self._queued.wait()
            if self._closed:
                return
            batches = list(self._queue)
            self._queue.clear()
            self._queued.clear()
            self._room.set()
            self._working = True
            try:
                async with owner.busy:
                    # Fetched before a rewind: the consumer reads these records again.
                    current = [batch for batch in batches if batch.epoch == owner.epoch]
                    if current and not owner.released and not self._closed:
                        await self._process(owner, merged(current))
            except Exception as exc:
                log.exception("partition %d: batch failed", owner.partition)
                self.close()  # a loop waiting to queue more must not wait for a dead lane
                self._on_error(exc)
                return
            finally:
                self._working = False


class Lanes:
    """The lanes of the owned partitions, and the first failure of any of them."""

    def __init__(
        self, process: Callable[[PartitionOwner, Records], Awaitable[None]], on_error: Callable[[], None]
    ) -> None:
        self._process = process
        self._on_error = on_error
        self._lanes: dict[int, Lane] = {}
        self._retired: list[Lane] = []
        self.failure: BaseException | None = None

    def _failed(self, exc: BaseException) -> None:
        if self.failure is None:
            self.failure = exc
        self._on_error()

    def idle(self) -> bool:
        return all(lane.idle() for lane in self._lanes.values())

    async def dispatch(self, owned: list[tuple[PartitionOwner, Records]]) -> None:
        """Hands each owner its records; the epochs are taken before the first wait, i.e. as of
        the fetch that returned them."""
        batches = [(owner, Batch(owner.epoch, records)) for owner, records in owned]
        self._retire_released()
        for owner, batch in batches:
            lane = self._lanes.get(owner.partition)
            if lane is None or lane.owner is not owner:
                if lane is not None:
                    self._retire(lane)
                lane = self._lanes[owner.partition] = Lane(owner, self._process, self._failed)
            await lane.put(batch)

    def _retire_released(self) -> None:
        for partition, lane in list(self._lanes.items()):
            if lane.owner.released:
                del self._lanes[partition]
                self._retire(lane)
        self._retired = [lane for lane in self._retired if not lane.task.done()]

    def _retire(self, lane: Lane) -> None:
        lane.close()
        self._retired.append(lane)

    async def close(self) -> None:
        """Drops every queued batch and waits for the batches in flight."""
        lanes = [*self._lanes.values(), *self._retired]
        self._lanes.clear()
        self._retired.clear()
        for lane in lanes:
            lane.close()
        await asyncio.gather(*(lane.task for lane in lanes), return_exceptions=True)
