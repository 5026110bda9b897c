"""End-to-end rate linkage: upstream state, strategy modes and the rate wall, against the real
broker; a burst with known content must produce exactly the expected deny/throttle/submit counts."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import orjson
import pytest

from tests.broker.conftest import TopicsFactory
from tests.broker.helpers import ROOT, TestTopics, drain, make_worker, produce, read_records
from tests.factories import decision_dict
from worker.core.backtest import BacktestExecutor
from worker.core.engine import ExecutionEngine
from worker.io.kafka import KafkaConfig
from worker.policy.modes import load_modes
from worker.policy.pretrade import PreTradePolicy
from worker.policy.rng import Rng

# examples/modes.yaml: Europe/Berlin; day = 3 orders/s per symbol; night (22:00-06:00) = 1/s.
NOON = int(datetime(2026, 1, 14, 11, 0, tzinfo=UTC).timestamp() * 1000)  # 12:00 in Berlin (CET)
NIGHT = int(datetime(2026, 1, 14, 22, 30, tzinfo=UTC).timestamp() * 1000)  # 23:30 in Berlin


@pytest.fixture
async def topics(topics_factory: TopicsFactory) -> TestTopics:
    """One partition per topic: these tests key several symbols alike so that one worker sees them
    in one input order, and the rate wall is per input partition."""
    return await topics_factory(partitions=1)


def modes_engine() -> ExecutionEngine:
    return ExecutionEngine(
        BacktestExecutor(Rng(0)), policy=PreTradePolicy(load_modes(ROOT / "examples" / "modes.yaml"))
    )


def burst() -> tuple[list[dict[str, object]], Counter[tuple[str, str]]]:
    rows: list[dict[str, object]] = []
    expected: Counter[tuple[str, str]] = Counter()

    def add(count: int, outcome: tuple[str, str], **fields: object) -> None:
        for _ in range(count):
            rows.append(decision_dict(signal_row_id=f"r{len(rows)}", **fields))
            expected[outcome] += 1

    # Noon, BTC: five healthy orders in the same millisecond; the day wall lets three through.
    add(3, ("FILLED", ""), event_ts_ms=NOON, ts_ms=NOON)
    add(2, ("THROTTLED", "rate_symbol"), event_ts_ms=NOON, ts_ms=NOON)
    # Noon, ETH: gates first (they spend no rate tokens), then two healthy orders.
    eth = {"symbol": "ETHUSDT", "px": "3120.001", "qty": "0.5", "tick_size": "0.01", "step_size": "0.0001"}
    add(2, ("DENIED", "warmup"), event_ts_ms=NOON, ts_ms=NOON, warmup=True, **eth)
    add(1, ("DENIED", "guard:stale_book"), event_ts_ms=NOON, ts_ms=NOON, guard_reason="stale_book", **eth)
    add(1, ("THROTTLED", "weak_signal"), event_ts_ms=NOON, ts_ms=NOON, weak_signal_throttle=True, **eth)
    add(1, ("THROTTLED", "low_consistency"), event_ts_ms=NOON, ts_ms=NOON, consistency=0.0, **eth)
    add(2, ("FILLED", ""), event_ts_ms=NOON, ts_ms=NOON, **eth)
    # Night, BTC: the mode switches at 22:00 Berlin; one order per second now.
    add(1, ("FILLED", ""), event_ts_ms=NIGHT, ts_ms=NIGHT)
    add(2, ("THROTTLED", "rate_symbol"), event_ts_ms=NIGHT, ts_ms=NIGHT)
    # One second later the bucket has refilled one token.
    add(1, ("FILLED", ""), event_ts_ms=NIGHT + 1_000, ts_ms=NIGHT + 1_000)
    return rows, expected


async def test_burst_gives_exactly_the_expected_counts(kafka: KafkaConfig, topics: TestTopics, tmp_path: Path) -> None:
    rows, expected = burst()
    # One partition: the rate wall sees the burst in its input order.
    await produce(kafka, topics.name("decisions"), [(b"burst", orjson.dumps(r)) for r in rows])
    worker = make_worker(kafka, topics, tmp_path / "outbox", engine=modes_engine())
    summary = await asyncio.wait_for(worker.run(), timeout=120)

    events = [orjson.loads(v) for _, _, v in await read_records(kafka, topics.name("exec_events"))]
    got = Counter((e["status"], e["reason"] or "") for e in events)
    assert got == expected
    modes = {(e["symbol"], e["event_ts_ms"] >= NIGHT): e["mode"] for e in events}
    assert modes[("BTCUSDT", False)] == "day" and modes[("BTCUSDT", True)] == "night"
    assert summary.mode_switches == 1
    assert worker.metrics.mode_switches.labels("day", "night", "schedule")._value.get() == 1
    assert worker.metrics.throttle.labels("rate_symbol")._value.get() == 4
    assert worker.metrics.pre_deny.labels("warmup")._value.get() == 2


async def test_signals_become_orders_or_recorded_no_actions(
    kafka: KafkaConfig, topics: TestTopics, tmp_path: Path
) -> None:
    def signal(row: str, score: str, symbol: str = "BTCUSDT") -> bytes:
        return orjson.dumps(
            {
                "signal_row_id": row,
                "ts_ms": NOON,
                "event_ts_ms": NOON,
                "symbol": symbol,
                "score": score,
                "regime": "trend",
                "warmup": False,
                "guard_reason": None,
                "consistency": 0.9,
                "weak_signal_throttle": False,
                "gate_reason_stats": {"spread_wide": 2},
            }
        )

    values = [signal("s1", "2.5"), signal("s2", "-3.0", "ETHUSDT"), signal("s3", "0.4"), signal("s4", "9", "ADAUSDT")]
    await produce(kafka, topics.name("signals"), [(b"k", v) for v in values])
    summary = await drain(kafka, topics, tmp_path / "outbox", engine=modes_engine())

    events = {
        e["signal_row_id"]: e
        for e in (orjson.loads(v) for _, _, v in await read_records(kafka, topics.name("exec_events")))
    }
    assert set(events) == {"s1", "s2"}
    assert (events["s1"]["side"], events["s2"]["side"]) == ("BUY", "SELL")
    assert events["s1"]["scenario"] == "day"  # sized by the day scenario: order_qty 0.01
    assert Decimal(events["s1"]["qty"]) == Decimal("0.01")
    assert summary.dropped["signal_no_action"] == 1
    dlq = [orjson.loads(v) for _, _, v in await read_records(kafka, topics.name("dlq"))]
    assert [(d["error_class"], "ADAUSDT" in d["reason"]) for d in dlq] == [("config", True)]


async def test_forced_mode_and_harvester_health_apply_from_the_first_order(
    kafka: KafkaConfig, topics: TestTopics, tmp_path: Path
) -> None:
    await produce(
        kafka,
        topics.name("strategy_mode"),
        [(b"global", orjson.dumps({"mode": "storm", "ts_ms": NOON, "reason": "desk override"}))],
    )
    health = {"ts_ms": NOON, "window_rows": 1000, "dedupe_count": 0, "drop_count": 0}
    await produce(
        kafka,
        topics.name("harvest_health"),
        [
            (b"ETHUSDT", orjson.dumps({**health, "symbol": "ETHUSDT", "stale": True})),
            (b"BTCUSDT", orjson.dumps({**health, "symbol": "BTCUSDT", "stale": False, "drop_count": 160})),
            (b"X", b"not json"),  # a bad control message is counted, never fatal
        ],
    )
    eth = {"symbol": "ETHUSDT", "px": "3120.001", "qty": "0.5", "tick_size": "0.01", "step_size": "0.0001"}
    rows = [decision_dict(signal_row_id="e1", event_ts_ms=NOON, ts_ms=NOON, **eth)]
    rows += [decision_dict(signal_row_id=f"b{i}", event_ts_ms=NOON, ts_ms=NOON) for i in range(3)]
    await produce(kafka, topics.name("decisions"), [(b"k", orjson.dumps(r)) for r in rows])
    worker = make_worker(kafka, topics, tmp_path / "outbox", engine=modes_engine())
    await asyncio.wait_for(worker.run(), timeout=120)

    events = {
        e["signal_row_id"]: e
        for e in (orjson.loads(v) for _, _, v in await read_records(kafka, topics.name("exec_events")))
    }
    assert {e["mode"] for e in events.values()} == {"storm"}
    assert (events["e1"]["status"], events["e1"]["reason"]) == ("DENIED", "harvest_stale")
    # storm allows 0.5 orders/s per symbol (burst 1); BTC's 16% loss scales that down to the floor: still 1 at once.
    assert [events[f"b{i}"]["status"] for i in range(3)] == ["FILLED", "THROTTLED", "THROTTLED"]
    assert worker.metrics.control_errors.labels(topics.name("harvest_health"))._value.get() == 1


async def test_market_activity_switches_the_mode_with_hysteresis(
    kafka: KafkaConfig, topics: TestTopics, tmp_path: Path
) -> None:
    from tests.broker.helpers import eventually

    worker = make_worker(kafka, topics, tmp_path / "outbox", engine=modes_engine(), until_drained=False)
    task = asyncio.create_task(worker.run())
    modes = worker.engine.policy.modes
    # 12 snapshots inside one second of event time: 12/s >= on_at 10 -> storm.
    burst = [
        orjson.dumps({"symbol": "BTCUSDT", "event_time_ms": NOON + i * 50, "bid": "64249", "ask": "64250"})
        for i in range(12)
    ]

    async def market_seen() -> bool:
        await produce(kafka, topics.name("market"), [(b"BTCUSDT", v) for v in burst])
        return modes.choose(NOON)[0] == "storm"

    await eventually(market_seen, timeout_s=30, what="the market trigger to turn on")
    await produce(kafka, topics.name("decisions"), [(b"k", orjson.dumps(decision_dict(event_ts_ms=NOON, ts_ms=NOON)))])

    async def executed() -> bool:
        return len(await read_records(kafka, topics.name("exec_events"))) == 1

    await eventually(executed, what="the decision to execute")
    # A quiet market (one snapshot in the next second: 1/s <= off_at 5) turns it off again.
    quiet = orjson.dumps({"symbol": "BTCUSDT", "event_time_ms": NOON + 5_000, "bid": "64249", "ask": "64250"})
    await produce(kafka, topics.name("market"), [(b"BTCUSDT", quiet)])

    async def calm() -> bool:
        return modes.choose(NOON)[0] == "day"

    await eventually(calm, timeout_s=30, what="the market trigger to turn off")
    worker.request_stop()
    await asyncio.wait_for(task, timeout=60)
    (event,) = [orjson.loads(v) for _, _, v in await read_records(kafka, topics.name("exec_events"))]
    assert event["mode"] == "storm"
