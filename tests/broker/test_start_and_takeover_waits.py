"""A worker waits for a broker or a venue that is coming back, instead of dying of it.

Found by the small chaos run in CI, where a worker exited 3 ("unaccounted"): a broker restart in
the middle of a takeover got three quick tries, then the worker gave up; a venue that did not
answer exchangeInfo at start got one try ("filters could not be loaded"). And while a takeover
was retried, the fetcher served the partitions' records to a loop that had no owner for them:
skipped, position advanced. Both tests fail on the code before the fix (commit 190579f): exit 3
at once; `TakeoverFailed` after the third try (and 0 of 10 decisions consumed after four).

And a worker run `until_drained` called itself drained while a takeover was still settling its
orders with the venue (found by the small chaos run: the final worker stopped right after the
takeover's reconcile had resent orders, which were left unresolved). The last test fails on the
code before the fix (2a6b752): `_drained` answers True while the takeover is held.
"""

from __future__ import annotations

import asyncio
import random
import socket
import uuid
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web
from aiokafka.errors import KafkaConnectionError

from tests.broker.helpers import TestTopics, eventually, make_worker, produce, read_records
from tests.broker.test_venue_takeover import Worker, sandbox_args
from tests.factories import decision_dict
from worker.io.kafka import KafkaConfig
from worker.runtime import partition as worker_module
from worker.runtime.partition import Partitions
from worker.runtime.worker import ExecWorker
from worker.sandbox.faults import FaultPlan
from worker.sandbox.limits import Limits
from worker.sandbox.matching import DEFAULT_SYMBOLS, Market
from worker.sandbox.server import SandboxExchange


def keyed(rows: list[dict[str, Any]]) -> list[tuple[bytes | None, bytes]]:
    return [(str(row["symbol"]).encode(), orjson.dumps(row)) for row in rows]


async def test_a_broker_outage_during_a_takeover_is_waited_for(
    kafka: KafkaConfig, topics: TestTopics, tmp_path: Path, monkeypatch: Any
) -> None:
    rows = [decision_dict(signal_row_id=f"r{i}", symbol=s) for i, s in enumerate(["BTCUSDT", "ETHUSDT"] * 5)]
    await produce(kafka, topics.name("decisions"), keyed(rows))
    rebuild = worker_module.rebuild_partitions
    failures = 0

    async def broker_down_for_four_tries(*args: Any, **kwargs: Any) -> Any:
        # What a broker restart in the middle of the rebuild looks like to the worker.
        nonlocal failures
        if failures < 4:
            failures += 1
            raise KafkaConnectionError("connection refused (broker restarting)")
        return await rebuild(*args, **kwargs)

    monkeypatch.setattr(worker_module, "rebuild_partitions", broker_down_for_four_tries)
    worker = make_worker(kafka, topics, tmp_path / "outbox")
    summary = await asyncio.wait_for(worker.run(), timeout=120)

    assert failures == 4
    assert summary.consumed == len(rows)
    assert len(await read_records(kafka, topics.name("exec_events"))) == len(rows)


async def test_a_worker_started_before_its_venue_waits_for_it(
    kafka: KafkaConfig, topics: TestTopics, tmp_path: Path
) -> None:
    rows = [decision_dict(signal_row_id=f"r{i}", symbol="BTCUSDT") for i in range(6)]  # on the venue's grid
    await produce(kafka, topics.name("decisions"), keyed(rows))
    with socket.socket() as probe:  # a free port, on which nothing listens yet
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    group = f"g-{uuid.uuid4().hex[:8]}"
    worker = Worker(
        topics, kafka, group, tmp_path / "outbox", *sandbox_args(f"http://127.0.0.1:{port}"), "--until-drained"
    )
    runner: web.AppRunner | None = None
    try:

        async def waiting_for_the_venue() -> bool:
            assert worker.process.poll() is None, worker.log()
            return "venue not ready" in worker.log()

        await eventually(waiting_for_the_venue, what="the worker to wait for its venue")
        exchange = SandboxExchange(
            Market(DEFAULT_SYMBOLS, random.Random(0)), FaultPlan.parse(None), 0, limits=Limits.unlimited()
        )
        runner = web.AppRunner(exchange.app(), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()

        assert await worker.wait(120) == 0, worker.log()
        assert len(exchange.ledger) == len(rows), worker.log()
        assert {entry.accepts for entry in exchange.ledger.values()} == {1}
    finally:
        worker.kill()
        if runner is not None:
            await runner.cleanup()


async def test_a_worker_is_not_drained_while_a_takeover_is_settling(
    kafka: KafkaConfig, topics: TestTopics, tmp_path: Path, monkeypatch: Any
) -> None:
    group = f"g-{uuid.uuid4().hex[:8]}"
    await produce(kafka, topics.name("decisions"), keyed([decision_dict(signal_row_id="before")]))
    first = make_worker(kafka, topics, tmp_path / "outbox", group=group)
    await asyncio.wait_for(first.run(), 60)  # consumed and committed: nothing is left to read

    settling, settle = asyncio.Event(), asyncio.Event()
    answers_while_settling: list[bool] = []
    asked_while_settling = asyncio.Event()
    real_settle, real_drained = Partitions._settle, ExecWorker._drained

    async def held_settle(self: Partitions, owner: Any, state: Any) -> None:
        if not settling.is_set():
            settling.set()  # the first partition's takeover is held here, mid-settle
            await settle.wait()
        await real_settle(self, owner, state)

    async def drained(self: ExecWorker, consumer: Any) -> bool:
        answer = await real_drained(self, consumer)
        if settling.is_set() and not settle.is_set():
            answers_while_settling.append(answer)
            asked_while_settling.set()
        return answer

    monkeypatch.setattr(Partitions, "_settle", held_settle)
    monkeypatch.setattr(ExecWorker, "_drained", drained)
    second = make_worker(kafka, topics, tmp_path / "outbox", group=group)
    run = asyncio.create_task(second.run())
    try:
        await asyncio.wait_for(settling.wait(), 60)
        await asyncio.wait_for(asked_while_settling.wait(), 60)
        assert answers_while_settling and not any(answers_while_settling)
        assert not run.done()
    finally:
        settle.set()
    await asyncio.wait_for(run, 60)
