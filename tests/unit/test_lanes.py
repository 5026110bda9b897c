"""The lanes' own rules (worker/runtime/lanes.py), without a broker: order, merging, the epoch,
released owners, back-pressure and a failing batch. The broker-side behaviour is in
tests/broker/test_lanes.py."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import TopicPartition

from worker.runtime.lanes import LANE_DEPTH, Gathered, Lanes, Records, merged
from worker.runtime.partition import PartitionOwner

pytestmark = pytest.mark.unit


class Record:
    def __init__(self, offset: int) -> None:
        self.offset = offset


class Table:
    """The order table's staged-state half: what a failing batch must roll back."""

    def __init__(self) -> None:
        self.rolled_back = 0

    def rollback(self) -> None:
        self.rolled_back += 1


def owner(partition: int = 0) -> PartitionOwner:
    return PartitionOwner(partition, producer=None, table=Table(), policy=None)  # type: ignore[arg-type]


def records(*offsets: int, partition: int = 0) -> Records:
    return {TopicPartition("decisions", partition): [Record(o) for o in offsets]}


def fetched(who: PartitionOwner, *offsets: int) -> Gathered:
    """What one poll returned for `who`'s partition, stamped as the loop stamps it."""
    gathered = Gathered()
    gathered.add(records(*offsets, partition=who.partition), {who.partition: who})
    return gathered


class Recorder:
    """The lanes' `process`: records what each call got; partition 0 can be held, any made to fail."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, list[int]]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.started = asyncio.Event()
        self.fail = False
        self.stopped = 0
        self.flow = Flow()
        self.limit = 500
        self._changed = asyncio.Condition()

    async def processed(self, count: int) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: len(self.calls) >= count)

    async def process(self, who: PartitionOwner, batch: Records) -> None:
        if who.partition == 0:  # the gate holds partition 0 only
            self.started.set()
            await self.gate.wait()
        if self.fail:
            raise RuntimeError("a bug in the batch step")
        async with self._changed:
            self.calls.append((who.partition, [r.offset for rs in batch.values() for r in rs]))
            self._changed.notify_all()

    def stop(self) -> None:
        self.stopped += 1

    def lanes(self) -> Lanes:
        return Lanes(self.process, self.stop, self.flow, limit=self.limit)


class Flow:
    """The partitions' fetching as a lane pauses and resumes it."""

    def __init__(self) -> None:
        self.log: list[tuple[str, int]] = []

    def hold(self, owner: PartitionOwner) -> None:
        self.log.append(("hold", owner.partition))

    def unhold(self, owner: PartitionOwner) -> None:
        self.log.append(("unhold", owner.partition))


async def test_batches_queued_behind_one_in_flight_are_merged_in_fetch_order() -> None:
    rec = Recorder()
    lanes, who = rec.lanes(), owner()
    rec.gate.clear()
    lanes.dispatch(fetched(who, 0, 1))
    await rec.started.wait()
    lanes.dispatch(fetched(who, 2))
    lanes.dispatch(fetched(who, 3, 4))
    rec.gate.set()
    await rec.processed(2)
    assert rec.calls == [(0, [0, 1]), (0, [2, 3, 4])]
    await lanes.close()


async def test_batches_fetched_before_a_rewind_are_dropped_those_after_are_kept() -> None:
    rec = Recorder()
    lanes, who = rec.lanes(), owner()
    rec.gate.clear()
    lanes.dispatch(fetched(who, 0))
    await rec.started.wait()
    lanes.dispatch(fetched(who, 1))  # fetched before the rewind
    who.epoch += 1  # what Partitions.rewind does, together with the seeks
    lanes.dispatch(fetched(who, 0, 1))  # read again after it
    rec.gate.set()
    await rec.processed(2)
    assert rec.calls == [(0, [0]), (0, [0, 1])]
    assert lanes.idle()
    await lanes.close()


async def test_a_released_owners_batches_are_never_processed_nor_handed_to_the_next_owner() -> None:
    rec = Recorder()
    lanes, old = rec.lanes(), owner()
    rec.gate.clear()
    lanes.dispatch(fetched(old, 0))
    await rec.started.wait()
    lanes.dispatch(fetched(old, 1))
    old.released = True
    new = owner()
    lanes.dispatch(fetched(new, 1))  # the new owner's own fetch
    rec.gate.set()
    await rec.processed(2)
    await lanes.close()
    # The batch in flight when the owner was released finishes (release waits for it: `busy`);
    # the one queued behind it is dropped; the new owner's own fetch is processed, once.
    assert sorted(rec.calls) == [(0, [0]), (0, [1])]


async def test_a_full_lane_pauses_its_partition_not_the_loop_and_resumes_it_when_it_takes_them() -> None:
    rec = Recorder()
    lanes, slow, fast = rec.lanes(), owner(0), owner(1)
    rec.gate.clear()
    lanes.dispatch(fetched(slow, 0))
    await rec.started.wait()
    for offset in range(1, LANE_DEPTH + 1):
        lanes.dispatch(fetched(slow, offset))  # never waits
    assert rec.flow.log == [("hold", 0)]  # paused at LANE_DEPTH batches queued, once
    lanes.dispatch(fetched(fast, 0))  # the other partitions go on meanwhile
    await rec.processed(1)
    assert rec.calls == [(1, [0])]
    rec.gate.set()
    await rec.processed(3)
    assert rec.flow.log == [("hold", 0), ("unhold", 0)]
    offsets = [o for p, os in rec.calls if p == 0 for o in os]
    assert offsets == list(range(LANE_DEPTH + 1))
    await lanes.close()


async def test_a_released_owners_full_lane_leaves_the_partition_to_its_next_owner() -> None:
    rec = Recorder()
    lanes, who = rec.lanes(), owner()
    rec.gate.clear()
    lanes.dispatch(fetched(who, 0))
    await rec.started.wait()
    for offset in range(1, LANE_DEPTH + 1):
        lanes.dispatch(fetched(who, offset))
    who.released = True  # revoked: the takeover of its next owner pauses and resumes it
    rec.gate.set()
    await rec.processed(1)
    await lanes.close()
    assert rec.flow.log == [("hold", 0)] and rec.calls == [(0, [0])]


async def test_a_failing_batch_stops_the_worker_and_never_blocks_the_loop() -> None:
    rec = Recorder()
    lanes, who = rec.lanes(), owner()
    rec.gate.clear()
    rec.fail = True
    lanes.dispatch(fetched(who, 0))
    await rec.started.wait()
    for offset in range(1, LANE_DEPTH + 1):
        lanes.dispatch(fetched(who, offset))
    rec.gate.set()
    lanes.dispatch(fetched(who, 99))  # a full queue of a dead lane must not hang
    await lanes.close()
    assert isinstance(lanes.failure, RuntimeError) and rec.stopped == 1 and rec.calls == []
    # Its staged state is rolled back and nothing more runs on the partition (no reconcile).
    assert who.released and who.table.rolled_back == 1  # type: ignore[attr-defined]


def test_a_poll_window_drops_what_it_gathered_before_a_rewind_or_a_new_owner() -> None:
    who = owner()
    gathered = Gathered()
    gathered.add(records(10, 11), {0: who})  # the first fetch of a window
    who.epoch += 1  # a lane's transaction failed meanwhile: rewound to 0
    gathered.add(records(0, 1), {0: who})  # the same window's next fetch
    (batch,) = gathered.batches()
    assert (batch.epoch, [r.offset for rs in batch.records.values() for r in rs]) == (1, [0, 1])
    assert gathered.count == 2
    successor = owner()
    gathered.add(records(2), {0: successor})  # revoked and taken back during the window
    (batch,) = gathered.batches()
    assert batch.owner is successor and [r.offset for rs in batch.records.values() for r in rs] == [2]
    gathered.add(records(3, partition=1), {0: successor})  # no owner: left to its new owner
    assert len(gathered.batches()) == 1 and gathered.count == 1


def test_records_handed_out_again_are_skipped_not_processed_twice() -> None:
    who = owner()
    first, again = fetched(who, 5, 6, 7), fetched(who, 6, 7, 8)
    batch = merged([*first.batches(), *again.batches()])
    assert [r.offset for rs in batch.values() for r in rs] == [5, 6, 7, 8]


async def test_a_chore_runs_in_the_lane_between_batches_without_the_loop_waiting() -> None:
    rec = Recorder()
    lanes, who = rec.lanes(), owner()
    rec.gate.clear()
    lanes.dispatch(fetched(who, 0))
    await rec.started.wait()
    ran: list[int] = []

    async def reconcile(owner: PartitionOwner) -> int:
        ran.append(len(rec.calls))  # how many batches were done when it ran
        return 0

    lanes.request(who, reconcile)  # returns at once: the batch in flight is not waited for
    lanes.request(who, reconcile)  # asked twice before it ran: runs once
    lanes.dispatch(fetched(who, 1))
    assert ran == []
    rec.gate.set()
    await rec.processed(2)
    assert ran == [1] and lanes.idle()
    await lanes.close()


async def test_a_transaction_takes_at_most_max_batch_records_and_leaves_the_rest_queued() -> None:
    rec = Recorder()
    rec.limit = 3
    lanes, who = rec.lanes(), owner()
    rec.gate.clear()
    lanes.dispatch(fetched(who, 0))
    await rec.started.wait()
    lanes.dispatch(fetched(who, 1, 2))
    lanes.dispatch(fetched(who, 3))
    lanes.dispatch(fetched(who, 4, 5))
    rec.gate.set()
    await rec.processed(3)
    # 2 + 1 fit in one transaction of 3; the next poll's 2 wait for the one after.
    assert rec.calls == [(0, [0]), (0, [1, 2, 3]), (0, [4, 5])]
    assert lanes.idle()
    await lanes.close()
