"""The lanes' own rules (worker/runtime/lanes.py), without a broker: order, merging, the epoch,
released owners, back-pressure and a failing batch. The broker-side behaviour is in
tests/broker/test_lanes.py."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import TopicPartition

from worker.runtime.lanes import LANE_DEPTH, Lanes, Records
from worker.runtime.partition import PartitionOwner

pytestmark = pytest.mark.unit

TP = TopicPartition("decisions", 0)


class Record:
    def __init__(self, offset: int) -> None:
        self.offset = offset


def owner(partition: int = 0) -> PartitionOwner:
    return PartitionOwner(partition, producer=None, table=None, policy=None)  # type: ignore[arg-type]


def records(*offsets: int) -> Records:
    return {TP: [Record(o) for o in offsets]}


class Recorder:
    """The lanes' `process`: records what each call got; can be held or made to fail."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, list[int]]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.started = asyncio.Event()
        self.fail = False
        self.stopped = 0
        self._changed = asyncio.Condition()

    async def processed(self, count: int) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: len(self.calls) >= count)

    async def process(self, who: PartitionOwner, batch: Records) -> None:
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
        return Lanes(self.process, self.stop)


async def test_batches_queued_behind_one_in_flight_are_merged_in_fetch_order() -> None:
    rec = Recorder()
    lanes, who = rec.lanes(), owner()
    rec.gate.clear()
    await lanes.dispatch([(who, records(0, 1))])
    await rec.started.wait()
    await lanes.dispatch([(who, records(2))])
    await lanes.dispatch([(who, records(3, 4))])
    rec.gate.set()
    await rec.processed(2)
    assert rec.calls == [(0, [0, 1]), (0, [2, 3, 4])]
    await lanes.close()


async def test_batches_fetched_before_a_rewind_are_dropped_those_after_are_kept() -> None:
    rec = Recorder()
    lanes, who = rec.lanes(), owner()
    rec.gate.clear()
    await lanes.dispatch([(who, records(0))])
    await rec.started.wait()
    await lanes.dispatch([(who, records(1))])  # fetched before the rewind
    who.epoch += 1  # what Partitions.rewind does, together with the seeks
    await lanes.dispatch([(who, records(0, 1))])  # read again after it
    rec.gate.set()
    await rec.processed(2)
    assert rec.calls == [(0, [0]), (0, [0, 1])]
    assert lanes.idle()
    await lanes.close()


async def test_a_released_owners_batches_are_never_processed_nor_handed_to_the_next_owner() -> None:
    rec = Recorder()
    lanes, old = rec.lanes(), owner()
    rec.gate.clear()
    await lanes.dispatch([(old, records(0))])
    await rec.started.wait()
    await lanes.dispatch([(old, records(1))])
    old.released = True
    new = owner()
    await lanes.dispatch([(new, records(1))])  # the new owner's own fetch
    rec.gate.set()
    await rec.processed(2)
    await lanes.close()
    # The batch in flight when the owner was released finishes (release waits for it: `busy`);
    # the one queued behind it is dropped; the new owner's own fetch is processed, once.
    assert sorted(rec.calls) == [(0, [0]), (0, [1])]


async def test_a_full_lane_makes_the_loop_wait_and_a_free_one_lets_it_go_on() -> None:
    rec = Recorder()
    lanes, slow, fast = rec.lanes(), owner(0), owner(1)
    rec.gate.clear()
    await lanes.dispatch([(slow, records(0))])
    await rec.started.wait()
    for offset in range(1, LANE_DEPTH + 1):
        await lanes.dispatch([(slow, records(offset))])
    blocked = asyncio.create_task(lanes.dispatch([(slow, records(LANE_DEPTH + 1))]))
    await asyncio.sleep(0)
    assert not blocked.done()
    rec.gate.set()
    await blocked
    await lanes.dispatch([(fast, records(0))])
    await rec.processed(4)
    offsets = [o for p, os in rec.calls if p == 0 for o in os]
    assert offsets == list(range(LANE_DEPTH + 2))
    assert (1, [0]) in rec.calls
    await lanes.close()


async def test_a_failing_batch_stops_the_worker_and_never_blocks_the_loop() -> None:
    rec = Recorder()
    lanes, who = rec.lanes(), owner()
    rec.gate.clear()
    rec.fail = True
    await lanes.dispatch([(who, records(0))])
    await rec.started.wait()
    for offset in range(1, LANE_DEPTH + 1):
        await lanes.dispatch([(who, records(offset))])
    rec.gate.set()
    await lanes.dispatch([(who, records(99))])  # a full queue of a dead lane must not hang
    await lanes.close()
    assert isinstance(lanes.failure, RuntimeError) and rec.stopped == 1 and rec.calls == []
