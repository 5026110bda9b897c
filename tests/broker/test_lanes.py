"""Issue 11, the loop at the stack's floor: each owned partition runs its batches in its own lane
(worker/runtime/lanes.py) while the loop polls on. Against the real broker:

* a partition whose commit stalls does not hold back the others (fails on the loop that waited
  for every partition's commit before its next poll: the second wave never commits);
* records fetched behind an aborted transaction are read again, in order, not skipped and not
  repeated (fails if a lane keeps the batches queued behind the abort);
* the same when the abort falls inside a poll window that gathers several fetches
  (`--commit-interval-ms`; fails if records are stamped with the epoch at dispatch instead of at
  fetch: the ten records before the abort were lost, found by review).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer
from aiokafka.consumer.fetcher import Fetcher
from aiokafka.errors import KafkaError

from tests.broker.conftest import TopicsFactory
from tests.broker.helpers import make_worker, produce, read_records
from tests.factories import decision_dict
from worker.io.kafka import KafkaConfig
from worker.io.partitioner import partition_for
from worker.runtime.lanes import Gathered, Lane, Lanes
from worker.runtime.transactions import TransactionWriter


def rows(prefix: str, symbol: str, count: int) -> list[tuple[bytes | None, bytes]]:
    base = decision_dict(symbol=symbol)
    return [
        (symbol.encode(), orjson.dumps({**base, "signal_row_id": f"{prefix}-{i}", "ts_ms": base["ts_ms"] + i}))
        for i in range(count)
    ]


class Committed:
    """Counts the exec-events each partition has committed; awaitable per partition."""

    def __init__(self) -> None:
        self.events: dict[int, int] = {}
        self._changed = asyncio.Condition()

    async def add(self, partition: int, count: int) -> None:
        async with self._changed:
            self.events[partition] = self.events.get(partition, 0) + count
            self._changed.notify_all()

    async def reach(self, partition: int, count: int) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: self.events.get(partition, 0) >= count)


def watch_commits(monkeypatch: Any, before: Callable[[int, int], Any]) -> Committed:
    """Wraps `TransactionWriter.commit`: `before(partition, call)` is awaited first; every commit
    that succeeds is counted."""
    committed = Committed()
    real = TransactionWriter.commit
    calls: dict[int, int] = {}

    async def commit(self: TransactionWriter, producer: Any, partition: int, events: Any, *rest: Any) -> Any:
        calls[partition] = calls.get(partition, 0) + 1
        await before(partition, calls[partition])
        out = await real(self, producer, partition, events, *rest)
        await committed.add(partition, len(events))
        return out

    monkeypatch.setattr(TransactionWriter, "commit", commit)
    return committed


async def test_a_partition_whose_commit_stalls_does_not_hold_back_the_others(
    kafka: KafkaConfig, topics_factory: TopicsFactory, tmp_path: Path, monkeypatch: Any
) -> None:
    topics = await topics_factory(partitions=2)
    slow, fast = "BTCUSDT", "ETHUSDT"
    assert (partition_for(slow, 2), partition_for(fast, 2)) == (0, 1)
    stalled, released = asyncio.Event(), asyncio.Event()

    async def stall_partition_0_once(partition: int, call: int) -> None:
        if partition == 0 and call == 1:
            stalled.set()
            await released.wait()

    committed = watch_commits(monkeypatch, stall_partition_0_once)
    decisions = topics.name("decisions")
    await produce(kafka, decisions, rows("slow", slow, 5) + rows("fast", fast, 5))
    worker = make_worker(kafka, topics, tmp_path / "outbox")
    run = asyncio.create_task(worker.run())
    try:
        await asyncio.wait_for(stalled.wait(), 60)
        await asyncio.wait_for(committed.reach(1, 5), 60)
        # A second wave for partition 1 while partition 0's first commit is still stalled.
        await produce(kafka, decisions, rows("fast2", fast, 5))
        await asyncio.wait_for(committed.reach(1, 10), 60)
        assert committed.events.get(0, 0) == 0
    finally:
        released.set()
    await asyncio.wait_for(run, 60)
    events = [orjson.loads(v) for _, _, v in await read_records(kafka, topics.name("exec_events"))]
    assert sorted(e["signal_row_id"] for e in events) == sorted(
        [f"slow-{i}" for i in range(5)] + [f"fast-{i}" for i in range(5)] + [f"fast2-{i}" for i in range(5)]
    )


async def test_records_fetched_behind_an_aborted_transaction_are_read_again_in_order(
    kafka: KafkaConfig, topics_factory: TopicsFactory, tmp_path: Path, monkeypatch: Any
) -> None:
    topics = await topics_factory(partitions=1)
    decisions = topics.name("decisions")
    queued_behind = asyncio.Event()
    real_put = Lane.put

    def put(self: Lane, batch: Any) -> None:
        real_put(self, batch)
        if self.working and self.queued:
            queued_behind.set()

    monkeypatch.setattr(Lane, "put", put)
    failed: list[int] = []

    async def refuse_the_first_commit_once_more_is_queued(partition: int, call: int) -> None:
        if call != 1:
            return
        # The next records arrive and are fetched and queued while this transaction is open...
        await produce(kafka, decisions, rows("second", "BTCUSDT", 10))
        await asyncio.wait_for(queued_behind.wait(), 60)
        failed.append(partition)
        # ...then this transaction fails: it is aborted and its records are read again.
        raise KafkaError("injected: the transaction failed")

    watch_commits(monkeypatch, refuse_the_first_commit_once_more_is_queued)
    await produce(kafka, decisions, rows("first", "BTCUSDT", 10))
    worker = make_worker(kafka, topics, tmp_path / "outbox")
    summary = await asyncio.wait_for(worker.run(), 90)

    assert failed == [0] and summary.aborted == 1
    events = [orjson.loads(v) for _, _, v in await read_records(kafka, topics.name("exec_events"))]
    assert [e["signal_row_id"] for e in events] == [f"first-{i}" for i in range(10)] + [
        f"second-{i}" for i in range(10)
    ]
    assert [e["source"]["offset"] for e in events] == list(range(20))


async def test_an_abort_inside_a_poll_window_loses_and_repeats_nothing(
    kafka: KafkaConfig, topics_factory: TopicsFactory, tmp_path: Path, monkeypatch: Any
) -> None:
    topics = await topics_factory(partitions=1)
    decisions = topics.name("decisions")
    second_fetched, window_dispatched = asyncio.Event(), asyncio.Event()
    aborted: list[int] = []

    real_getmany = AIOKafkaConsumer.getmany

    async def getmany(self: AIOKafkaConsumer, *args: Any, **kwargs: Any) -> Any:
        out = await real_getmany(self, *args, **kwargs)
        if any(r.offset >= 10 for rs in out.values() for r in rs):
            second_fetched.set()
        return out

    real_fetch = Fetcher._proc_fetch_request
    held: list[bool] = []

    async def fetch(self: Fetcher, *args: Any) -> Any:
        if aborted and not held:
            # The re-read after the rewind comes back only once the window that gathered the
            # records fetched before it has been handed to the lanes.
            held.append(True)
            await window_dispatched.wait()
        return await real_fetch(self, *args)

    real_dispatch = Lanes.dispatch

    def dispatch(self: Lanes, gathered: Gathered) -> None:
        real_dispatch(self, gathered)
        if aborted:
            window_dispatched.set()

    async def abort_the_first_commit_once_the_next_records_are_in_the_window(partition: int, call: int) -> None:
        if call != 1:
            return
        await produce(kafka, decisions, rows("second", "BTCUSDT", 10))
        await asyncio.wait_for(second_fetched.wait(), 60)  # the loop holds them in its window
        aborted.append(partition)
        raise KafkaError("injected: the transaction failed")

    monkeypatch.setattr(AIOKafkaConsumer, "getmany", getmany)
    monkeypatch.setattr(Fetcher, "_proc_fetch_request", fetch)
    monkeypatch.setattr(Lanes, "dispatch", dispatch)
    watch_commits(monkeypatch, abort_the_first_commit_once_the_next_records_are_in_the_window)
    await produce(kafka, decisions, rows("first", "BTCUSDT", 10))
    worker = make_worker(kafka, topics, tmp_path / "outbox", commit_interval_ms=500)
    summary = await asyncio.wait_for(worker.run(), 90)

    assert aborted == [0] and held and summary.aborted == 1
    events = [orjson.loads(v) for _, _, v in await read_records(kafka, topics.name("exec_events"))]
    assert [e["source"]["offset"] for e in events] == list(range(20))
    assert [e["signal_row_id"] for e in events] == [f"first-{i}" for i in range(10)] + [
        f"second-{i}" for i in range(10)
    ]
