"""Issue 12 item 1, must show: `execworker run --executor sandbox --shadow backtest:quote` on the
bundled sample, with the real broker and the sandbox exchange over real HTTP (no rate limits):
parity >= 99% on `/metrics`, one shadow event per order on exec-shadow.v1 (co-partitioned with its
exec-events, committed with them). And a shadow whose venue is down does not stop the primary."""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from collections import Counter
from pathlib import Path

import orjson
from aiohttp import ClientSession

from bench.shadow import pinned_market, pinned_sandbox, sample_values
from tests.broker.helpers import (
    TestTopics,
    committed_offsets,
    end_offsets,
    eventually,
    produce,
    read_records,
    spawn_worker,
)
from tests.broker.test_prometheus_scrape import free_port
from worker.io.kafka import KafkaConfig


async def _metrics(port: int) -> dict[str, float]:
    """`/metrics` as {series: value} (series = name{labels} as served)."""
    async with ClientSession() as session, session.get(f"http://127.0.0.1:{port}/metrics") as response:
        text = await response.text()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            series, _, value = line.rpartition(" ")
            out[series] = float(value)
    return out


async def _answers(port: int) -> bool:
    try:
        await _metrics(port)
    except OSError:
        return False
    return True


async def test_shadow_backtest_quote_beside_the_sandbox_on_the_sample(
    kafka: KafkaConfig, topics: TestTopics, tmp_path: Path
) -> None:
    values = sample_values()
    market = pinned_market(values)
    port = free_port()
    group = f"g-{uuid.uuid4().hex[:8]}"
    async with pinned_sandbox(market) as (url, _):
        worker = spawn_worker(
            topics,
            kafka,
            group,
            tmp_path / "outbox",
            *("--executor", "sandbox", "--venue-url", url, "--shadow", "backtest:quote"),
            *("--metrics-port", str(port)),
            stderr=subprocess.DEVNULL,
        )
        try:
            await eventually(lambda: _answers(port), 60, "the worker's /metrics")

            # The control feed follows market.v1 from its end: the market goes in once the worker
            # consumes (its lag is reported after the feed started), before the decisions.
            async def consuming() -> bool:
                return any(s.startswith("executor_consumer_lag{") for s in await _metrics(port))

            await eventually(consuming, 60, "the worker to own its partitions")
            await produce(
                kafka,
                topics.name("market"),
                [(s.symbol.encode(), orjson.dumps(s.model_dump(mode="json"))) for s in market],
            )

            async def market_seen() -> bool:
                return (await _metrics(port))["executor_shadow_market_snapshots_total"] == len(market)

            await eventually(market_seen, 60, "the shadow's market view to hold the market")
            await produce(kafka, topics.name("decisions"), [(orjson.loads(v)["symbol"].encode(), v) for v in values])

            async def consumed() -> bool:
                ends = await end_offsets(kafka, topics.name("decisions"))
                committed = await committed_offsets(kafka, group, topics.name("decisions"))
                return all((committed.get(p) or 0) == end for p, end in ends.items())

            await eventually(consumed, 120, "every decision committed")
            sent: set[str] = set()

            async def compared() -> bool:
                events = [orjson.loads(v) for _, _, v in await read_records(kafka, topics.name("exec_events"))]
                sent.clear()
                sent.update(e["client_order_id"] for e in events if e["status"] == "SUBMITTED")
                answered = {e["client_order_id"] for e in events if e["status"] != "SUBMITTED"} & sent
                count = (await _metrics(port))["executor_shadow_compared_total"]
                return bool(sent) and answered == sent and count == len(sent)

            await eventually(compared, 60, "every order sent to be compared")
            metrics = await _metrics(port)
        finally:
            worker.terminate()
            code = await asyncio.to_thread(worker.wait, 60)
    assert code == 0

    assert len(sent) > 2_000  # the sample's orders that passed the gates
    assert metrics["executor_shadow_parity_ratio"] >= 0.99, metrics
    assert metrics['executor_shadow_mismatch_total{field="unavailable"}'] == 0
    # One shadow event per order, on the partition of that order's exec-events.
    shadow = [(p, orjson.loads(v)) for p, _, v in await read_records(kafka, topics.name("shadow_events"))]
    per_order = Counter(e["client_order_id"] for _, e in shadow)
    assert set(per_order) == sent and set(per_order.values()) == {1}
    exec_partition = {
        orjson.loads(v)["client_order_id"]: p for p, _, v in await read_records(kafka, topics.name("exec_events"))
    }
    assert all(exec_partition[e["client_order_id"]] == p for p, e in shadow)
    assert {e["executor"] for _, e in shadow} == {"backtest"}


async def test_a_shadow_venue_that_is_down_does_not_stop_the_primary(
    kafka: KafkaConfig, topics: TestTopics, tmp_path: Path
) -> None:
    values = sample_values()[:60]
    await produce(kafka, topics.name("decisions"), [(orjson.loads(v)["symbol"].encode(), v) for v in values])
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    worker = spawn_worker(
        topics,
        kafka,
        f"g-{uuid.uuid4().hex[:8]}",
        tmp_path / "outbox",
        *("--shadow", f"venue:{dead}", "--shadow-timeout-s", "0.3", "--max-batch", "10", "--until-drained"),
    )
    out, err = await asyncio.to_thread(worker.communicate, timeout=120)
    assert worker.returncode == 0, err.decode()[-2000:]
    # The backtest primary executed everything; the shadow's answers say it was not reached, and
    # each order was logged as unanswered (counted as field="unavailable").
    events = [orjson.loads(v) for _, _, v in await read_records(kafka, topics.name("exec_events"))]
    assert len({e["client_order_id"] for e in events}) == len(values)
    sent = {e["client_order_id"] for e in events if e["status"] not in ("DENIED", "THROTTLED")}
    shadow = [orjson.loads(v) for _, _, v in await read_records(kafka, topics.name("shadow_events"))]
    assert all(e["status"] == "REJECTED" and e["reason"].startswith("not_sent") for e in shadow)
    assert err.count(b"shadow: no answer for order") == len(sent) > 0
    assert b"execworker run summary" in out
