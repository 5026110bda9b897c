"""A pipeline per owned partition: the poll loop hands records to the partition's lane and polls on.

Why: a loop that waits for every partition's commit before its next poll makes a record that
arrives during a commit wait for the slowest partition's transaction, then for its own. A lane
runs one partition's batches one transaction at a time, in offset order, while the loop keeps
fetching for every partition; batches that queued up during a transaction are merged into the
next one (up to `max_batch` records), so load makes transactions larger, not queues longer. The
loop never waits for a lane: a lane holding `LANE_DEPTH` batches (a slow venue, a stalled
commit) has its partition's fetching paused until it takes them, and the other partitions go on.

Order and exactly-once: one lane per owner, one transaction at a time, under the owner's `busy`
lock (which release also takes; the timed reconcile runs in the lane, between batches). Records
carry the owner and epoch of the `getmany` that returned them (`Gathered`); a rewind (an aborted
transaction) bumps the epoch and seeks the consumer back to the committed offsets, so records
fetched before it are dropped, never processed twice or out of order, also when a poll window
gathers several fetches. A released owner's lane drops whatever it still holds.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Protocol, TypeAlias

from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

from worker.runtime.partition import PartitionOwner

log = logging.getLogger(__name__)

Record: TypeAlias = "ConsumerRecord[bytes, bytes]"
Records: TypeAlias = dict[TopicPartition, list[Record]]

# Batches a lane may hold before its partition's fetching is paused: enough to keep a
# transaction's worth queued behind the one in flight, few enough that a revoke or a rewind
# drops little.
LANE_DEPTH = 4


class Flow(Protocol):
    """Pauses and resumes the fetching of an owner's inputs (runtime/partition.py)."""

    def hold(self, owner: PartitionOwner) -> None: ...

    def unhold(self, owner: PartitionOwner) -> None: ...


Chore: TypeAlias = Callable[[PartitionOwner], Awaitable[object]]


@dataclass(frozen=True)
class Batch:
    owner: PartitionOwner  # the owner and its epoch when the records were fetched
    epoch: int
    records: Records

    def size(self) -> int:
        return sum(len(records) for records in self.records.values())


class Gathered:
    """One poll window's records per partition, stamped with the owner and epoch current when
    each `getmany` returned them (taken with no await in between). If a partition's owner or epoch
    moves during the window (a rewind, a rebalance), what was gathered before was fetched before
    the move: it is dropped, the consumer reads it again."""

    def __init__(self) -> None:
        self._parts: dict[int, Batch] = {}
        self.count = 0

    def add(self, fetched: Records, owners: Mapping[int, PartitionOwner]) -> None:
        for tp, records in fetched.items():
            owner = owners.get(tp.partition)
            if owner is None:
                continue  # revoked while the fetch was in flight; the new owner reads it
            held = self._parts.get(tp.partition)
            if held is None or held.owner is not owner or held.epoch != owner.epoch:
                if held is not None:
                    self.count -= held.size()
                held = self._parts[tp.partition] = Batch(owner, owner.epoch, {})
            held.records.setdefault(tp, []).extend(records)
            self.count += len(records)

    def batches(self) -> list[Batch]:
        return [self._parts[p] for p in sorted(self._parts)]


def merged(batches: list[Batch]) -> Records:
    """Consecutive batches of one partition as one: per topic-partition, in fetch order.

    A record at or below one already in the batch is a copy handed out again (aiokafka can do so
    around a seek; a rewind's are dropped by epoch before this): skipped, never processed twice.
    """
    out: Records = {}
    for batch in batches:
        for tp, records in batch.records.items():
            kept = out.setdefault(tp, [])
            if not records:
                continue
            if not kept or records[0].offset > kept[-1].offset:
                kept.extend(records)  # a fetch's records increase: the common case
                continue
            for record in records:
                if kept and record.offset <= kept[-1].offset:
                    log.warning("%s[%d]: offset %d handed out again; skipped", tp.topic, tp.partition, record.offset)
                    continue
                kept.append(record)
    return out


class Lane:
    def __init__(
        self,
        owner: PartitionOwner,
        process: Callable[[PartitionOwner, Records], Awaitable[None]],
        on_error: Callable[[BaseException], None],
        flow: Flow,
        limit: int,
    ) -> None:
        self.owner = owner
        self._process = process
        self._on_error = on_error
        self._flow = flow
        self._limit = limit  # records per transaction (`max_batch`)
        self._queue: deque[Batch] = deque()
        self._queued = asyncio.Event()
        self._held = False  # its partition's fetching paused: the lane is full
        self._chore: Chore | None = None
        self._working = False
        self._closed = False
        self.task = asyncio.create_task(self._run(), name=f"lane-p{owner.partition}")

    def idle(self) -> bool:
        return not self._queue and self._chore is None and not self._working

    def request(self, chore: Chore) -> None:
        """Runs `chore(owner)` under `busy` before the next batch (once, however often asked)."""
        if not self._closed and self._chore is None:
            self._chore = chore
            self._queued.set()

    @property
    def queued(self) -> int:
        """Batches waiting behind the one in flight (or for the lane to start)."""
        return len(self._queue)

    @property
    def working(self) -> bool:
        return self._working

    @property
    def held(self) -> bool:
        return self._held

    def put(self, batch: Batch) -> None:
        """Queues a batch; at `LANE_DEPTH` batches the partition's fetching is paused."""
        if self._closed:
            return
        self._queue.append(batch)
        self._queued.set()
        if len(self._queue) >= LANE_DEPTH and not self._held:
            self._flow.hold(self.owner)
            self._held = True

    def close(self) -> None:
        """Drops what is queued; the batch in flight finishes, then the task ends."""
        self._closed = True
        self._queue.clear()
        self._queued.set()

    def _take(self) -> list[Batch]:
        """The next transaction's batches: the oldest queued, up to `limit` records (at least one
        batch), so a transaction, and a venue burst, stays as large as a poll at most."""
        taken: list[Batch] = []
        count = 0
        while self._queue:
            size = self._queue[0].size()
            if taken and count + size > self._limit:
                break
            taken.append(self._queue.popleft())
            count += size
        return taken

    async def _run(self) -> None:
        owner = self.owner
        while True:
            await self._queued.wait()
            if self._closed:
                return
            batches, chore = self._take(), self._chore
            self._chore = None
            if not self._queue:
                self._queued.clear()
            if self._held and len(self._queue) < LANE_DEPTH:
                if not owner.released:
                    # Room again: fetch the next batches while this one commits. (A released
                    # owner's partition is not ours to resume: its next owner's takeover is.)
                    self._flow.unhold(owner)
                self._held = False
            self._working = True
            try:
                async with owner.busy:
                    if chore is not None and not owner.released and not self._closed:
                        await chore(owner)
                    # Fetched before a rewind: the consumer reads these records again.
                    current = [batch for batch in batches if batch.epoch == owner.epoch]
                    if current and not owner.released and not self._closed:
                        await self._process(owner, merged(current))
            except Exception as exc:
                log.exception("partition %d: batch failed", owner.partition)
                # Its staged state never reached Kafka: nothing may commit it, and nothing more
                # runs on the partition; the worker stops (a supervisor restarts it).
                owner.table.rollback()
                owner.released = True
                self.close()
                self._on_error(exc)
                return
            finally:
                self._working = False


class Lanes:
    """The lanes of the owned partitions, and the first failure of any of them."""

    def __init__(
        self,
        process: Callable[[PartitionOwner, Records], Awaitable[None]],
        on_error: Callable[[], None],
        flow: Flow,
        limit: int,
    ) -> None:
        self._process = process
        self._on_error = on_error
        self._flow = flow
        self._limit = limit
        self._lanes: dict[int, Lane] = {}
        self._retired: list[Lane] = []
        self.failure: BaseException | None = None

    def _failed(self, exc: BaseException) -> None:
        if self.failure is None:
            self.failure = exc
        self._on_error()

    def idle(self) -> bool:
        return all(lane.idle() for lane in self._lanes.values())

    def dispatch(self, gathered: Gathered) -> None:
        """Hands each partition's records to its owner's lane (as stamped when fetched); never
        waits: a full lane pauses its own partition's fetching instead."""
        self._retire_released()
        for batch in gathered.batches():
            self._lane(batch.owner).put(batch)

    def request(self, owner: PartitionOwner, chore: Chore) -> None:
        """`chore(owner)` in the owner's lane, between its batches (a lane for it if none)."""
        if not owner.released:
            self._lane(owner).request(chore)

    def _lane(self, owner: PartitionOwner) -> Lane:
        lane = self._lanes.get(owner.partition)
        if lane is None or lane.owner is not owner:
            if lane is not None:
                self._retire(lane)
            lane = self._lanes[owner.partition] = Lane(owner, self._process, self._failed, self._flow, self._limit)
        return lane

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
