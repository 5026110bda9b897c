"""Issue 10, the venue side of a takeover, with real processes: `execworker run --executor sandbox`
workers against the sandbox exchange (in this process, over real HTTP) and the real broker.

  * a worker killed between its committed cancel intent and the DELETE: the next owner cancels;
  * `--until-drained` with an order whose outcome is unknown: it is settled before the exit;
  * a worker frozen (SIGSTOP) past its session timeout with committed intents not yet sent, its
    partitions taken over and finished by another worker, then resumed (SIGCONT): no client
    order id is accepted twice.

Both fail on the code before the fix (commit d085908): the order stays open at the venue; 37
client order ids accepted twice.
"""

from __future__ import annotations

import asyncio
import random
import re
import signal
import subprocess
import threading
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.typedefs import Handler

from examples.gen_decisions import decisions
from tests.broker.helpers import TestTopics, eventually, produce, read_records, spawn_worker
from tests.factories import decision_dict
from worker.contract.enums import OrderStatus
from worker.contract.state_machine import is_terminal
from worker.io.kafka import KafkaConfig
from worker.sandbox.faults import FaultPlan
from worker.sandbox.limits import Limits
from worker.sandbox.matching import DEFAULT_SYMBOLS, Market
from worker.sandbox.server import SandboxExchange

ACQUIRED = re.compile(r"partition (\d+) acquired")
OWNERSHIP = re.compile(r"partition (\d+) (acquired|released)")


@dataclass
class Venue:
    """The sandbox exchange behind one or more URLs (one per worker, so that the test knows who
    sends what), with a switch that makes it hold every DELETE without an answer, and a hook per
    URL run when its first order request arrives."""

    exchange: SandboxExchange
    urls: list[str] = field(default_factory=list)
    hold_cancels: bool = False
    cancel_held: asyncio.Event = field(default_factory=asyncio.Event)
    released: asyncio.Event = field(default_factory=asyncio.Event)
    on_first_order: dict[int, Callable[[], None]] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.urls[0]

    def accepts(self) -> Counter[str]:
        return Counter({coid: entry.accepts for coid, entry in self.exchange.ledger.items()})


VenueFactory = Callable[..., Awaitable[Venue]]


@pytest.fixture
async def venue_factory() -> AsyncIterator[VenueFactory]:
    started: list[tuple[Venue, list[web.AppRunner]]] = []

    async def start(faults: str | None = None, urls: int = 1) -> Venue:
        # No rate limits here: these tests are about takeovers, not Binance's 50 orders per 10 s.
        exchange = SandboxExchange(
            Market(DEFAULT_SYMBOLS, random.Random(0)), FaultPlan.parse(faults), 0, limits=Limits.unlimited()
        )
        venue = Venue(exchange)
        runners: list[web.AppRunner] = []
        started.append((venue, runners))
        for index in range(urls):
            app = venue.exchange.app()
            app.middlewares.append(_middleware(venue, index))
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            runners.append(runner)
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            venue.urls.append(f"http://127.0.0.1:{runner.addresses[0][1]}")
        return venue

    yield start
    for venue, runners in started:
        venue.released.set()
        for runner in runners:
            await runner.cleanup()


def _middleware(venue: Venue, index: int) -> Any:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path == "/api/v3/order" and request.method == "POST" and index in venue.on_first_order:
            venue.on_first_order.pop(index)()
        if venue.hold_cancels and request.method == "DELETE" and request.path == "/api/v3/order":
            # Never processed, never answered: the connection is dropped at the end of the test.
            venue.cancel_held.set()
            await venue.released.wait()
            if request.transport is not None:
                request.transport.abort()
            return web.Response(status=599)
        return await handler(request)

    return middleware


class Worker:
    """An `execworker run --executor sandbox` process; its log lines are collected as they come."""

    def __init__(self, topics: TestTopics, kafka: KafkaConfig, group: str, outbox: Path, *extra: str) -> None:
        self.process = spawn_worker(topics, kafka, group, outbox, *extra)
        self.lines: list[str] = []
        assert self.process.stderr is not None
        self._reader = threading.Thread(target=self._read, args=(self.process.stderr,), daemon=True)
        self._reader.start()

    def _read(self, stream: Any) -> None:
        for raw in stream:
            self.lines.append(raw.decode(errors="replace"))

    def acquired(self, since: int = 0) -> set[int]:
        return {int(m.group(1)) for line in self.lines[since:] if (m := ACQUIRED.search(line))}

    def owned(self) -> set[int]:
        """The partitions it owns by its log (acquired and not released since)."""
        owned: set[int] = set()
        for line in list(self.lines):
            if m := OWNERSHIP.search(line):
                (owned.add if m.group(2) == "acquired" else owned.discard)(int(m.group(1)))
        return owned

    def log(self) -> str:
        return "".join(self.lines)[-4000:]

    async def wait(self, timeout_s: float) -> int:
        try:
            return await asyncio.to_thread(self.process.wait, timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            await asyncio.to_thread(self.process.wait, 30)
            pytest.fail(f"worker did not exit within {timeout_s}s:\n{self.log()}")

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(30)


def sandbox_args(url: str, *extra: str) -> tuple[str, ...]:
    return ("--executor", "sandbox", "--venue-url", url, "--session-timeout-ms", "6000", *extra)


async def exec_events(kafka: KafkaConfig, topics: TestTopics) -> list[tuple[int, dict[str, Any]]]:
    return [(p, orjson.loads(v)) for p, _, v in await read_records(kafka, topics.name("exec_events"))]


async def test_crash_between_the_cancel_intent_and_the_delete_still_cancels_the_order(
    kafka: KafkaConfig, topics: TestTopics, venue_factory: VenueFactory, tmp_path: Path
) -> None:
    venue = await venue_factory()
    group, outbox = f"g-{uuid.uuid4().hex[:8]}", tmp_path / "outbox"
    # A limit buy below the market: it rests on the venue's book.
    await produce(kafka, topics.name("decisions"), [(b"BTCUSDT", orjson.dumps(decision_dict(signal_row_id="rest")))])
    first = Worker(topics, kafka, group, outbox, *sandbox_args(venue.url, "--venue-timeout-s", "1"))
    try:

        async def resting() -> str | None:
            accepted = [e for _, e in await exec_events(kafka, topics) if e["status"] == "ACCEPTED"]
            return accepted[0]["client_order_id"] if accepted else None

        await eventually(lambda: _truthy(resting()), timeout_s=60, what="the order to rest on the venue")
        coid = await resting()
        assert coid is not None
        # From now on the venue never answers a DELETE (nor processes it).
        venue.hold_cancels = True
        cancel = decision_dict(signal_row_id="cancel", action="CANCEL", target_client_order_id=coid)
        await produce(kafka, topics.name("decisions"), [(b"BTCUSDT", orjson.dumps(cancel))])
        await asyncio.wait_for(venue.cancel_held.wait(), timeout=60)
    finally:
        first.kill()  # kill -9 while its DELETE is at the venue, unanswered
    venue.hold_cancels = False

    second = Worker(topics, kafka, group, outbox, *sandbox_args(venue.url, "--until-drained"))
    code = await second.wait(120)
    assert code == 0, second.log()

    assert venue.exchange.ledger[coid].status == "CANCELED"
    assert venue.accepts()[coid] == 1
    statuses = [e["status"] for _, e in await exec_events(kafka, topics) if e["client_order_id"] == coid]
    assert statuses[-1] == "CANCELED" and statuses.count("CANCELED") == 1, statuses
    assert "PENDING_CANCEL" in statuses  # the intent was committed before the DELETE


async def test_until_drained_waits_for_an_unknown_outcome_to_be_settled(
    kafka: KafkaConfig, topics: TestTopics, venue_factory: VenueFactory, tmp_path: Path
) -> None:
    # The first order request gets a 503 the venue sent without processing it: an unknown
    # outcome (UNKNOWN). The worker must not call itself drained (and exit) until it is settled.
    venue = await venue_factory("script=5xx")
    row = decision_dict(signal_row_id="unknown", tif="IOC")
    await produce(kafka, topics.name("decisions"), [(b"BTCUSDT", orjson.dumps(row))])
    worker = Worker(
        topics,
        kafka,
        f"g-{uuid.uuid4().hex[:8]}",
        tmp_path / "outbox",
        *sandbox_args(venue.url, "--until-drained", "--recv-window-ms", "2000", "--reconcile-interval-ms", "200"),
    )
    assert await worker.wait(90) == 0, worker.log()

    events = [e for _, e in await exec_events(kafka, topics)]
    assert [(e["status"], e.get("attempt")) for e in events[:3]] == [("SUBMITTED", 1), ("UNKNOWN", 1), ("SUBMITTED", 2)]
    assert len(events) == 4 and is_terminal(OrderStatus(events[-1]["status"])), events
    assert venue.accepts() == Counter({events[0]["client_order_id"]: 1})
    assert venue.exchange.fault_counts == {"5xx": 1}


async def _truthy(value: Awaitable[object]) -> bool:
    return bool(await value)


def ioc_decisions(count: int, seed: int) -> list[dict[str, object]]:
    """Sample decisions, all IOC or MARKET: every order is final at once at the venue, and its
    client order id is free again there, which is what makes a late copy dangerous."""
    rows = []
    for row in decisions(count, seed):
        row["tif"] = "IOC"
        rows.append(row)
    return rows


async def test_a_paused_worker_resumed_after_a_takeover_gets_no_order_accepted_twice(
    kafka: KafkaConfig, topics: TestTopics, venue_factory: VenueFactory, tmp_path: Path
) -> None:
    # Every order request waits 300-600 ms at the venue: a partition's batch of intents queues
    # up behind its 16 concurrent sends, so most are committed but not yet signed when the worker
    # freezes. One URL per worker: the venue sees whose request it is.
    venue = await venue_factory("latency=300-600ms", urls=2)
    group = f"g-{uuid.uuid4().hex[:8]}"
    common = ("--recv-window-ms", "3000", "--reconcile-interval-ms", "200", "--venue-timeout-s", "2")
    frozen = Worker(topics, kafka, group, tmp_path / "outbox-1", *sandbox_args(venue.urls[0], *common))
    other = Worker(topics, kafka, group, tmp_path / "outbox-2", *sandbox_args(venue.urls[1], *common))
    try:

        async def both_own_partitions() -> bool:
            mine, theirs = frozen.owned(), other.owned()
            return bool(mine) and bool(theirs) and not mine & theirs and len(mine | theirs) == 6

        # The group may first give every partition to whichever worker joined first, then split.
        await eventually(both_own_partitions, timeout_s=120, what="both workers to own partitions")
        mine = frozen.owned()
        # Frozen the moment its first order request arrives: its first intents are committed,
        # a few requests are on their way, the rest of its batch is waiting to be signed.
        venue.on_first_order[0] = lambda: frozen.process.send_signal(signal.SIGSTOP)
        rows = ioc_decisions(300, seed=41)
        expected = {str(r["signal_row_id"]) for r in rows}
        await produce(kafka, topics.name("decisions"), [(str(r["symbol"]).encode(), orjson.dumps(r)) for r in rows])

        async def frozen_now() -> bool:
            return not venue.on_first_order

        await eventually(frozen_now, timeout_s=60, what="the frozen worker's first order request")
        frozen_at = len(other.lines)

        async def taken_over() -> bool:
            return mine <= other.acquired(frozen_at)

        await eventually(taken_over, timeout_s=60, what="the other worker to take the frozen one's partitions")

        async def all_final() -> bool:
            events = await exec_events(kafka, topics)
            return {e["signal_row_id"] for _, e in events if is_terminal(OrderStatus(e["status"]))} == expected

        await eventually(all_final, timeout_s=180, what="every decision to reach a final state")
        resumed_at = len(frozen.lines)
        frozen.process.send_signal(signal.SIGCONT)

        # What it still had queued runs first (and must not reach the venue); then it rejoins.
        async def rejoined() -> bool:
            return bool(frozen.acquired(resumed_at))

        await eventually(rejoined, timeout_s=60, what="the resumed worker to rejoin the group")
        frozen.process.send_signal(signal.SIGTERM)
        other.process.send_signal(signal.SIGTERM)
        assert await frozen.wait(60) == 0, frozen.log()
        assert await other.wait(60) == 0, other.log()
    finally:
        frozen.process.send_signal(signal.SIGCONT)
        frozen.kill()
        other.kill()

    twice = {coid: n for coid, n in venue.accepts().items() if n > 1}
    assert twice == {}, f"{len(twice)} client order ids accepted twice"
    events = [e for _, e in await exec_events(kafka, topics)]
    terminal = Counter(e["signal_row_id"] for e in events if is_terminal(OrderStatus(e["status"])))
    assert set(terminal) == expected and set(terminal.values()) == {1}
    # The case this test is for did happen: intents the frozen worker had committed but not sent
    # were resent by the new owner (after they expired), and reached the venue once each.
    resent = {e["client_order_id"] for e in events if e["reason"] == "resend"}
    assert resent and all(coid in venue.exchange.ledger for coid in resent)
    # ... and none was given up unsent: every order of a decision that passed the gates reached
    # the venue (a resend stamped long before it could be sent expired, three times over).
    given_up = [e["client_order_id"] for e in events if (e["reason"] or "").startswith("not_at_venue")]
    assert given_up == []
    assert {e["client_order_id"] for e in events if e["status"] == "SUBMITTED"} == set(venue.exchange.ledger)
