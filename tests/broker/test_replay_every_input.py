"""Live equals replay with every input role: a live group of two workers reading decisions, signals
(Avro), a modes file with binding per-symbol and global rate walls, market triggers (market.v1,
Avro), harvester health and an explicit mode commits exactly the exec-events (all fields but
`source`) that `replay --from-topics` makes from the same topics afterwards.

The live order of control records against inputs is set by when the control consumer reads them,
and the live order of a partition's decisions against its signals by how polls batch them; the
replay applies control records by event time and inputs by (event time, symbol, role, position)
(worker/runtime/replay_inputs.py). So the scenario runs in steps whose event times increase: each
step's records are produced only once the previous step is committed (or, for a control record,
seen by both workers' policies), which makes the live order the replay's order."""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel

from tests.broker.conftest import TopicsFactory
from tests.broker.helpers import ROOT, TestTopics, cli, committed_offsets, end_offsets, eventually, make_worker
from tests.broker.test_replay import group_members, outbox_lines, without_source
from tests.factories import decision_dict
from worker.codec.json_codec import decode_json
from worker.contract.messages import Decision, HarvestHealth, MarketSnapshot, Signal, StrategyModeCommand
from worker.core.backtest import BacktestExecutor
from worker.core.engine import ExecutionEngine
from worker.io.kafka import KafkaConfig
from worker.io.topics import codec_for, write_variant
from worker.policy.modes import load_modes
from worker.policy.pretrade import PreTradePolicy
from worker.policy.rng import Rng
from worker.runtime.worker import ExecWorker

T0 = 1_768_388_400_000  # 2026-01-14 11:00 UTC
# Binding walls: the global bucket (per input partition) is below the per-symbol one, so a burst
# of one symbol meets both reasons; ETHUSDT and SOLUSDT share partition 1 of 4 (murmur2).
MODES = """
timezone: UTC
default: day
modes:
  day: {z_threshold: "2.0", take_profit_bps: "30", stop_loss_bps: "20", cost_bps: "6", order_qty: "0.01",
        per_symbol_orders_per_s: 4, global_orders_per_s: 3, min_consistency: 0.5}
  night: {z_threshold: "2.5", take_profit_bps: "20", stop_loss_bps: "15", cost_bps: "8", order_qty: "0.005",
          per_symbol_orders_per_s: 2, global_orders_per_s: 3, min_consistency: 0.6}
  storm: {z_threshold: "3.0", take_profit_bps: "60", stop_loss_bps: "40", cost_bps: "12", order_qty: "0.002",
          per_symbol_orders_per_s: 1, global_orders_per_s: 2, min_consistency: 0.8}
market: {mode: storm, on_at: 10.0, off_at: 5.0}
symbols:
  BTCUSDT: {tick_size: "0.01", step_size: "0.00001", min_notional: "5"}
  ETHUSDT: {tick_size: "0.01", step_size: "0.0001", min_notional: "5"}
  SOLUSDT: {tick_size: "0.01", step_size: "0.001", min_notional: "5"}
"""
GRID = {
    "BTCUSDT": {"px": "64250.123", "qty": "0.012345", "tick_size": "0.01", "step_size": "0.00001"},
    "ETHUSDT": {"px": "3120.001", "qty": "0.5", "tick_size": "0.01", "step_size": "0.0001"},
    "SOLUSDT": {"px": "150.123", "qty": "1.5", "tick_size": "0.01", "step_size": "0.001"},
    "XRPUSDT": {"px": "0.61234", "qty": "100", "tick_size": "0.0001", "step_size": "0.1"},
}
SYMBOLS = sorted(GRID)


class Scenario:
    """Produces each role's records with the role's codec (JSON or Avro), keyed by symbol."""

    def __init__(self, kafka: KafkaConfig, topics: TestTopics) -> None:
        self.kafka = kafka
        self.topics = topics
        self.rows = 0

    async def send(self, role: str, records: list[tuple[bytes, BaseModel | bytes]]) -> None:
        codec = codec_for(self.topics.file.role(role), ROOT / "schemas")
        producer = self.kafka.producer(acks="all", enable_idempotence=True, linger_ms=5)
        await producer.start()
        try:
            for key, message in records:
                value = message if isinstance(message, bytes) else codec.encode(message)
                await producer.send_and_wait(self.topics.name(role), value=value, key=key)
        finally:
            await producer.stop()

    async def decisions(self, at: int, per_symbol: int, **fields: Any) -> None:
        """A burst: `per_symbol` decisions of every symbol at each of three milliseconds."""
        rows = []
        for ts in (at, at + 100, at + 1_500):
            for symbol in SYMBOLS:
                for n in range(per_symbol):
                    self.rows += 1
                    side = "BUY" if n % 2 == 0 else "SELL"
                    row = decision_dict(
                        signal_row_id=f"d{self.rows}", ts_ms=ts + 5, event_ts_ms=ts, symbol=symbol, side=side
                    )
                    rows.append({**row, **GRID[symbol], **fields})
        await self.send("decisions", [(r["symbol"].encode(), decode_json(Decision, orjson.dumps(r))) for r in rows])

    async def signals(self, at: int, scores: list[str], gated: int) -> None:
        """Every symbol's signals at two milliseconds (XRPUSDT has no grid: a config reject)."""
        records: list[tuple[bytes, BaseModel | bytes]] = []
        for ts in (at, at + 700):
            for symbol in SYMBOLS:
                for score in scores:
                    self.rows += 1
                    signal = {
                        "signal_row_id": f"s{self.rows}",
                        "ts_ms": ts + 5,
                        "event_ts_ms": ts,
                        "symbol": symbol,
                        "score": score,
                        "regime": "trend",
                        "warmup": False,
                        "guard_reason": None,
                        "consistency": 0.95,
                        "weak_signal_throttle": False,
                        "gate_reason_stats": {"spread_wide": gated + self.rows % 7},
                    }
                    records.append((symbol.encode(), decode_json(Signal, orjson.dumps(signal))))
        await self.send("signals", records)

    async def market(self, times: list[int]) -> None:
        snapshots = [
            decode_json(
                MarketSnapshot,
                orjson.dumps({"symbol": "BTCUSDT", "event_time_ms": t, "bid": "64249", "ask": "64250"}),
            )
            for t in times
        ]
        await self.send("market", [(b"BTCUSDT", s) for s in snapshots])


async def caught_up(kafka: KafkaConfig, group: str, topics: TestTopics) -> bool:
    """The group has committed every input record written so far (events are in the same transactions)."""
    for role in ("decisions", "signals"):
        name = topics.name(role)
        ends = await end_offsets(kafka, name)
        committed = await committed_offsets(kafka, group, name)
        if any((committed.get(p) or 0) < end for p, end in ends.items()):
            return False
    return True


def every_policy(workers: list[ExecWorker], check: Callable[[PreTradePolicy], bool]) -> Callable[[], Awaitable[bool]]:
    async def seen() -> bool:
        return all(check(worker.engine.policy) for worker in workers)

    return seen


async def test_a_live_group_with_signals_modes_market_and_a_binding_wall_commits_the_replays_events(
    kafka: KafkaConfig, topics_factory: TopicsFactory, tmp_path: Path
) -> None:
    modes = tmp_path / "modes.yaml"
    modes.write_text(MODES, encoding="utf-8")
    topics = await topics_factory(partitions=4, signals="avro", market="avro")
    scene = Scenario(kafka, topics)
    # Read whole at start by both workers, and by the replay before the first input (ts T0 - 1 s).
    health = {"ts_ms": T0 - 1_000, "window_rows": 1000, "dedupe_count": 0, "drop_count": 0}
    await scene.send(
        "harvest_health",
        [
            (b"SOLUSDT", HarvestHealth.model_validate({**health, "symbol": "SOLUSDT", "stale": True})),
            (
                b"BTCUSDT",
                HarvestHealth.model_validate({**health, "symbol": "BTCUSDT", "stale": False, "drop_count": 99}),
            ),
        ],
    )
    group = f"g-{uuid.uuid4().hex[:8]}"
    workers = [
        make_worker(
            kafka,
            topics,
            tmp_path / f"outbox-{n}",
            group,
            ExecutionEngine(BacktestExecutor(Rng(0)), policy=PreTradePolicy(load_modes(modes))),
            until_drained=False,
            max_batch=7,
        )
        for n in range(2)
    ]
    tasks = [asyncio.create_task(worker.run()) for worker in workers]
    try:
        # Both members own partitions before any input exists (no takeover mid-run).
        async def stable() -> bool:
            return await group_members(kafka, group) == ("Stable", 2) and all(w.partitions.owners for w in workers)

        await eventually(stable, timeout_s=90, what="a group of two")

        async def step(produce: Awaitable[None]) -> None:
            await produce
            await eventually(lambda: caught_up(kafka, group, topics), timeout_s=60, what="the step to commit")

        # Day: bursts over the walls, then signals (their gate statistics tighten each partition's wall).
        await step(scene.decisions(T0, per_symbol=5))
        await step(scene.signals(T0 + 2_000, ["2.4", "-3.2", "0.5"], gated=10))
        await scene.send("signals", [(b"BTCUSDT", b"\x00not avro")])  # dead-lettered live, rejected in replay
        await step(scene.decisions(T0 + 3_000, per_symbol=4))
        # Storm: 12 snapshots within one second of event time switch the market trigger on.
        await scene.market([T0 + 5_000 + 50 * i for i in range(12)])
        await eventually(every_policy(workers, lambda p: p.modes.choose(T0)[0] == "storm"), what="storm")
        await step(scene.decisions(T0 + 6_000, per_symbol=3))
        await step(scene.signals(T0 + 8_000, ["3.5", "-2.9"], gated=30))
        # A quiet second turns it off again (1 snapshot/s <= off_at 5).
        await scene.market([T0 + 10_000])
        await eventually(every_policy(workers, lambda p: p.modes.choose(T0)[0] == "day"), what="day again")
        await step(scene.decisions(T0 + 11_000, per_symbol=4))
        # An explicit mode beats the market and the default.
        command = StrategyModeCommand.model_validate({"mode": "night", "ts_ms": T0 + 13_000, "reason": "test"})
        await scene.send("strategy_mode", [(b"global", command)])
        await eventually(every_policy(workers, lambda p: p.modes.explicit == "night"), what="night")
        await step(scene.decisions(T0 + 14_000, per_symbol=3))
        await step(scene.signals(T0 + 16_000, ["2.6", "-2.6"], gated=0))
    finally:
        for worker in workers:
            worker.request_stop()
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=60)
    assert all(worker.summary.consumed for worker in workers)  # both did part of the work

    live = [value for _, _, value in await _records(kafka, topics.name("exec_events"))]
    common = ["--topics", str(topics.path), "--modes", str(modes), "--bootstrap-servers", kafka.bootstrap_servers]
    result = _replay("--from-topics", *common, "--out", str(tmp_path / "replay"))
    replayed = outbox_lines(tmp_path / "replay")
    assert sorted(map(without_source, live)) == sorted(map(without_source, replayed))

    # The scenario means something: every mode, both walls, signals made orders and no-actions.
    events = [orjson.loads(v) for v in live]
    assert {e["mode"] for e in events} == {"day", "storm", "night"}
    reasons = Counter(e["reason"] for e in events)
    assert reasons["rate_global"] > 0 and reasons["rate_symbol"] > 0 and reasons["harvest_stale"] > 0
    assert any(e["signal_row_id"].startswith("s") for e in events)
    assert "signal_no_action=16" in result.stdout
    # What live dead-lettered, the replay counts as rejected, by error class (XRPUSDT has no grid).
    dead = Counter(orjson.loads(v)["error_class"] for _, _, v in await _records(kafka, topics.name("dlq")))
    assert dead == {"config": 10, "unknown_schema": 1}
    assert "undecodable input (live: the DLQ): config=10, unknown_schema=1" in result.stdout
    assert "market=13" in result.stdout and "strategy_mode=1" in result.stdout and "harvest_health=2" in result.stdout
    # The decisions alone (today's --from-topic) miss what the other roles did: not what live did.
    decisions_only = _replay("--from-topic", "decisions", *common, "--out", str(tmp_path / "decisions-only"))
    assert decisions_only.returncode == 0
    assert sorted(map(without_source, outbox_lines(tmp_path / "decisions-only"))) != sorted(
        map(without_source, [v for v in live if orjson.loads(v)["signal_row_id"].startswith("d")])
    )


def _replay(*args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(cli("replay", *args), cwd=ROOT, capture_output=True, timeout=300, text=True)
    assert result.returncode == 0, result.stderr
    return result


async def test_from_topics_reads_avro_as_json_and_says_which_topic_is_missing(
    kafka: KafkaConfig, topics_factory: TopicsFactory, tmp_path: Path
) -> None:
    # The same records on JSON topics, on Avro topics and in files: one digest.
    roles = ("decisions", "signals", "market", "strategy_mode", "harvest_health")
    json_topics = await topics_factory(partitions=1)
    avro_topics = await topics_factory(partitions=1, **dict.fromkeys(roles, "avro"))
    modes = str(ROOT / "examples" / "modes.yaml")
    for topics in (json_topics, avro_topics):
        scene = Scenario(kafka, topics)
        await scene.decisions(T0, per_symbol=2)
        await scene.signals(T0 + 2_000, ["2.4", "-3.9", "1"], gated=20)
        await scene.market([T0 + 3_000 + 50 * i for i in range(12)])
        await scene.decisions(T0 + 4_000, per_symbol=1)
        mode = StrategyModeCommand.model_validate({"mode": "night", "ts_ms": T0 + 5_000})
        await scene.send("strategy_mode", [(b"global", mode)])
        await scene.decisions(T0 + 6_000, per_symbol=1)
    digests = []
    for topics in (json_topics, avro_topics):
        common = ["--topics", str(topics.path), "--bootstrap-servers", kafka.bootstrap_servers]
        out = _replay("--from-topics", *common, "--modes", modes).stdout
        assert "market=12" in out and "strategy_mode=1" in out
        digests.append(out.strip().splitlines()[-1])
    assert digests[0] == digests[1]
    decisions_only = [
        _replay("--from-topic", "decisions", "--topics", str(t.path), "--bootstrap-servers", kafka.bootstrap_servers)
        for t in (json_topics, avro_topics)
    ]
    assert "replayed 48 decisions" in decisions_only[1].stdout  # --from-topic reads an Avro topic too
    assert decisions_only[0].stdout.splitlines()[-1] == decisions_only[1].stdout.splitlines()[-1]
    # Files of the JSON topics' records replay to the same digest (one partition: one policy state).
    paths = []
    for role in ("decisions", "signals", "market", "strategy_mode"):
        path = tmp_path / f"{role}.jsonl"
        path.write_bytes(b"".join(v + b"\n" for _, _, v in await _records(kafka, json_topics.name(role))))
        paths += ["--from-file", f"{role}={path}"]
    assert _replay(*paths, "--modes", modes).stdout.strip().splitlines()[-1] == digests[0]

    absent = tmp_path / "absent.yaml"
    write_variant(ROOT / "topics.yaml", absent, f"absent{uuid.uuid4().hex[:6]}")
    failed = subprocess.run(
        cli("replay", "--from-topics", "--topics", str(absent), "--bootstrap-servers", kafka.bootstrap_servers),
        cwd=ROOT,
        capture_output=True,
        timeout=120,
        text=True,
    )
    assert failed.returncode == 2, failed.stderr
    assert "topics missing on the cluster" in failed.stderr and "(role signals)" in failed.stderr
    assert "execworker topics apply --topics" in failed.stderr


async def _records(kafka: KafkaConfig, topic: str) -> list[tuple[int, int, bytes]]:
    from tests.broker.helpers import read_records

    return await read_records(kafka, topic)
