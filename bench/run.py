"""Benchmarks against the real local broker. One command: `make bench` (or `python -m bench.run`).

  throughput   decisions in -> committed exec-events out per second, one worker process
  latency      produce -> exec-event visible to a read_committed consumer, at a steady rate
  outbox       lines per second published into ready/ files
  decode       JSON decode + validate cost per decision

Results are printed and written as JSON (`--json`); BENCHMARKS.md records them with the machine.
Wall-clock time is used here, and only here: benchmarks measure the shell, they produce no events.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import orjson

from examples.gen_decisions import decisions
from worker.codec.json_codec import decode_json
from worker.contract.messages import Decision
from worker.core.backtest import BacktestExecutor
from worker.core.engine import ExecutionEngine
from worker.io.kafka import KafkaConfig, bootstrap_from_env, topic_partitions
from worker.io.outbox import Outbox, OutboxLine
from worker.io.topics import TopicsFile, apply_topics, write_variant
from worker.policy.pretrade import PreTradePolicy
from worker.policy.rng import Rng
from worker.runtime.settings import WorkerSettings
from worker.runtime.summary import percentile
from worker.runtime.worker import ExecWorker

ROOT = Path(__file__).resolve().parents[1]


async def fresh_topics(kafka: KafkaConfig, workdir: Path) -> tuple[Path, TopicsFile]:
    suffix = uuid.uuid4().hex[:8]
    path = workdir / f"topics-{suffix}.yaml"
    topics = write_variant(ROOT / "topics.yaml", path, f"bench{suffix}")
    async with kafka.admin_session() as admin:
        await apply_topics(admin, topics)
    return path, topics


async def drop_topics(kafka: KafkaConfig, topics: TopicsFile) -> None:
    async with kafka.admin_session() as admin:
        await admin.delete_topics([spec.name for spec in topics.topics.values()])


def bench_settings(
    kafka: KafkaConfig, path: Path, group: str, outbox: Path, until_drained: bool = True
) -> WorkerSettings:
    """A bench worker's settings: its own group and transactional ids, no metrics endpoint."""
    return WorkerSettings(
        bootstrap_servers=kafka.bootstrap_servers,
        topics_file=path,
        group_id=group,
        transactional_prefix=group,
        outbox_dir=outbox,
        until_drained=until_drained,
        metrics_port=0,
    )


def worker_for(
    kafka: KafkaConfig,
    path: Path,
    topics: TopicsFile,
    outbox: Path,
    until_drained: bool,
    policy: PreTradePolicy | None = None,
) -> ExecWorker:
    group = f"bench-{uuid.uuid4().hex[:8]}"
    settings = bench_settings(kafka, path, group, outbox, until_drained=until_drained)
    return ExecWorker(settings, topics, ExecutionEngine(BacktestExecutor(Rng(0)), policy=policy))


async def produce_all(kafka: KafkaConfig, topic: str, values: list[bytes]) -> None:
    producer = kafka.producer(acks="all", enable_idempotence=True, linger_ms=10)
    await producer.start()
    try:
        futures = [await producer.send(topic, value=v, key=orjson.loads(v)["symbol"].encode()) for v in values]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def bench_throughput(kafka: KafkaConfig, workdir: Path, count: int) -> dict[str, Any]:
    path, topics = await fresh_topics(kafka, workdir)
    try:
        values = [orjson.dumps(d) for d in decisions(count, seed=101)]
        await produce_all(kafka, topics.role("decisions").name, values)
        worker = worker_for(kafka, path, topics, workdir / "outbox-tp", until_drained=True)
        started = time.perf_counter()
        summary = await worker.run()
        elapsed = time.perf_counter() - started
        assert summary.events == count, (summary.events, count)
        # State rebuild on assignment: fold the whole exec-events topic again (fresh outbox).
        from worker.codec.wire import JsonWire
        from worker.runtime.recovery import rebuild_partitions

        rebuild_started = time.perf_counter()
        rebuilt = await rebuild_partitions(
            kafka,
            topics.role("exec_events").name,
            JsonWire(),
            list(range(topics.role("exec_events").partitions)),
            Outbox(workdir / "outbox-rebuild"),
        )
        rebuild_s = time.perf_counter() - rebuild_started
        events_read = sum(r.events_read for r in rebuilt.values())
        return {
            "rebuild_events": events_read,
            "rebuild_seconds": round(rebuild_s, 2),
            "rebuild_events_per_s": round(events_read / rebuild_s),
            "decisions": count,
            "seconds": round(elapsed, 2),
            "decisions_per_s": round(count / elapsed),
            "transactions": summary.transactions,
            "note": "includes group join, state rebuild and outbox writes",
        }
    finally:
        await drop_topics(kafka, topics)


async def bench_latency(
    kafka: KafkaConfig, workdir: Path, rate: int, seconds: int, policy: PreTradePolicy | None = None
) -> dict[str, Any]:
    path, topics = await fresh_topics(kafka, workdir)
    worker = worker_for(kafka, path, topics, workdir / f"outbox-lat-{uuid.uuid4().hex[:6]}", False, policy)
    worker_task = asyncio.create_task(worker.run())
    sent_at: dict[str, float] = {}
    seen_at: dict[str, float] = {}
    count = rate * seconds
    values = [orjson.dumps(d) for d in decisions(count, seed=202)]

    # A read_committed fetch parked at the broker is not woken when a transaction commits, so the
    # default fetch_max_wait_ms (500) would dominate what we measure; a downstream reader that
    # cares about latency sets it low too (docs/operations.md).
    consumer = kafka.consumer(
        group_id=None, isolation_level="read_committed", enable_auto_commit=False, fetch_max_wait_ms=20
    )
    await consumer.start()
    try:
        tps = await topic_partitions(consumer, topics.role("exec_events").name)
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)

        async def read() -> None:
            while len(seen_at) < count:
                batches = await consumer.getmany(timeout_ms=100)
                now = time.perf_counter()
                for records in batches.values():
                    for record in records:
                        seen_at.setdefault(orjson.loads(record.value)["signal_row_id"], now)

        reader = asyncio.create_task(read())
        # Let the worker join the group before the clock starts.
        await asyncio.sleep(3)
        producer = kafka.producer(acks="all", enable_idempotence=True, linger_ms=0)
        await producer.start()
        try:
            interval = 1.0 / rate
            start = time.perf_counter()
            for index, value in enumerate(values):
                target = start + index * interval
                delay = target - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                sent_at[orjson.loads(value)["signal_row_id"]] = time.perf_counter()
                await producer.send(
                    topics.role("decisions").name, value=value, key=orjson.loads(value)["symbol"].encode()
                )
            await producer.flush()
            achieved = count / (time.perf_counter() - start)
        finally:
            await producer.stop()
        await asyncio.wait_for(reader, timeout=120)
    finally:
        await consumer.stop()
        worker.request_stop()
        await worker_task
        await drop_topics(kafka, topics)
    latencies = sorted(int((seen_at[k] - sent_at[k]) * 1000) for k in sent_at)
    return {
        "rate_target": rate,
        "rate_achieved": round(achieved),
        "messages": count,
        "p50_ms": percentile(latencies, 0.50),
        "p95_ms": percentile(latencies, 0.95),
        "p99_ms": percentile(latencies, 0.99),
        "max_ms": latencies[-1],
    }


async def bench_venue(kafka: KafkaConfig, workdir: Path, count: int) -> dict[str, Any]:
    """The exactly-once pipeline with a venue: intent txn, HTTP to the sandbox, answer txn."""
    import random as _random
    from decimal import Decimal

    from aiohttp import web

    from bench.chaos import chaos_decisions
    from examples.gen_decisions import SYMBOLS
    from worker.io.binance.client import BinanceClient, VenueCredentials
    from worker.io.binance.executor import BinanceExecutor
    from worker.policy.clock import WallClock
    from worker.sandbox.faults import FaultPlan
    from worker.sandbox.limits import Limits
    from worker.sandbox.matching import DEFAULT_SYMBOLS, Market
    from worker.sandbox.server import DEFAULT_API_KEY, DEFAULT_API_SECRET, SandboxExchange

    market = Market(DEFAULT_SYMBOLS, _random.Random(0), {s: Decimal(p) for s, p, *_ in SYMBOLS})
    exchange = SandboxExchange(market, FaultPlan.parse(None), 0, limits=Limits.unlimited())
    runner = web.AppRunner(exchange.app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    path, topics = await fresh_topics(kafka, workdir)
    try:
        values = [orjson.dumps(d) for d in chaos_decisions(count, seed=404)]
        await produce_all(kafka, topics.role("decisions").name, values)
        group = f"bench-{uuid.uuid4().hex[:8]}"
        settings = bench_settings(kafka, path, group, workdir / "outbox-venue")
        executor = BinanceExecutor(
            BinanceClient(url, VenueCredentials(DEFAULT_API_KEY, DEFAULT_API_SECRET)), WallClock(), venue_name="sandbox"
        )
        worker = ExecWorker(settings, topics, ExecutionEngine(executor, clock=WallClock()))
        started = time.perf_counter()
        summary = await worker.run()
        elapsed = time.perf_counter() - started
        orders = len(exchange.ledger)
        return {
            "decisions": count,
            "venue_orders": orders,
            "seconds": round(elapsed, 2),
            "decisions_per_s": round(count / elapsed),
            "venue_orders_per_s": round(orders / elapsed),
            "transactions": summary.transactions,
            "exec_events": summary.events,
        }
    finally:
        await runner.cleanup()
        await drop_topics(kafka, topics)


PERMISSIVE_MODES = """
timezone: Europe/Berlin
default: day
modes:
  day: {z_threshold: "2", take_profit_bps: "30", stop_loss_bps: "20", cost_bps: "6", order_qty: "0.01",
        per_symbol_orders_per_s: 100000, global_orders_per_s: 1000000, min_consistency: 0.5}
  night: {z_threshold: "2", take_profit_bps: "30", stop_loss_bps: "20", cost_bps: "6", order_qty: "0.01",
          per_symbol_orders_per_s: 100000, global_orders_per_s: 1000000, min_consistency: 0.5}
schedule:
  - {start: "22:00", end: "06:00", mode: night}
"""


async def bench_gating(kafka: KafkaConfig, workdir: Path, rate: int, seconds: int) -> dict[str, Any]:
    """Latency without and with the full pre-trade policy (modes + rate wall that never binds)."""
    from worker.policy.modes import load_modes

    modes_file = workdir / "modes.yaml"
    modes_file.write_text(PERMISSIVE_MODES)
    before = await bench_latency(kafka, workdir, rate, seconds)
    after = await bench_latency(kafka, workdir, rate, seconds, PreTradePolicy(load_modes(modes_file)))
    p95_before, p95_after = before["p95_ms"], after["p95_ms"]
    return {
        "without_policy": before,
        "with_policy": after,
        "p95_change_pct": round((p95_after - p95_before) / p95_before * 100, 1) if p95_before else None,
    }


def bench_outbox(workdir: Path, count: int, batch: int) -> dict[str, Any]:
    outbox = Outbox(workdir / "outbox-bench")
    symbols = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT", "XRPUSDT", "DOGEUSDT")
    lines = []
    base_ts = 1_767_225_600_000
    for index in range(count):
        event_id = f"ew{index:032x}.1"
        # ~100 events per symbol per minute, as a busy live minute would have.
        ts = base_ts + (index // 600) * 60_000
        payload = orjson.dumps({"event_id": event_id, "symbol": symbols[index % 6], "pad": "x" * 500})
        lines.append(OutboxLine(symbols[index % 6], ts, event_id, payload))
    started = time.perf_counter()
    written = 0
    for offset in range(0, count, batch):
        written += outbox.publish(lines[offset : offset + batch])
    elapsed = time.perf_counter() - started
    assert written == count
    return {
        "lines": count,
        "batch": batch,
        "seconds": round(elapsed, 2),
        "lines_per_s": round(count / elapsed),
    }


async def bench_replay(count: int) -> dict[str, Any]:
    """Replay from memory (as read from a file): decode, canonical sort, engine, encode, digest.

    Best of three runs, and where the time goes: decoding and sorting (`canonical_order`) is
    timed on its own; the rest is the engine, encoding and the digest. `orjson_loads_us` (a bare
    JSON parse of the same input) says how fast this machine is, to compare figures across hosts.
    """
    from worker.runtime.replay import canonical_order, replay

    values = [orjson.dumps(d) for d in decisions(count, seed=505)]
    runs, digests = [], set()
    for _ in range(3):
        started = time.perf_counter()
        result = await replay(ExecutionEngine(BacktestExecutor(Rng(0))), values)
        runs.append(time.perf_counter() - started)
        digests.add(result.digest)
    assert len(digests) == 1, "replay is not deterministic"
    started = time.perf_counter()
    canonical_order(values)
    decode_s = time.perf_counter() - started
    started = time.perf_counter()
    for value in values:
        orjson.loads(value)
    loads_s = time.perf_counter() - started
    best = min(runs)
    return {
        "decisions": count,
        "seconds": round(best, 2),
        "decisions_per_s": round(count / best),
        "runs_s": [round(r, 2) for r in runs],
        "decode_and_sort_us": round(decode_s / count * 1e6, 2),
        "engine_encode_digest_us": round((best - decode_s) / count * 1e6, 2),
        "orjson_loads_us": round(loads_s / count * 1e6, 2),
        "digest": result.digest[:16],
    }


def bench_decode(count: int) -> dict[str, Any]:
    values = [orjson.dumps(d) for d in decisions(count, seed=303)]
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        for value in values:
            decode_json(Decision, value)
        best = min(best, time.perf_counter() - started)
    return {
        "decisions": count,
        "us_per_decision": round(best / count * 1e6, 2),
        "runs": 5,
        "statistic": "best of 5",
    }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    kafka = KafkaConfig(bootstrap_from_env())
    await kafka.check_reachable()
    workdir = Path(tempfile.mkdtemp(prefix="execworker-bench-"))
    try:
        results: dict[str, Any] = {
            "machine": {
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "platform": platform.platform(),
                "broker": kafka.bootstrap_servers,
            }
        }
        wanted = (
            set(args.only.split(","))
            if args.only
            else {"decode", "replay", "parity", "outbox", "throughput", "venue", "latency", "gating"}
        )
        if "decode" in wanted:
            results["decode"] = bench_decode(args.decode_count)
        if "parity" in wanted:
            from bench.parity import measure_parity

            results["parity"] = (await measure_parity(args.parity_count)).to_json()
        if "replay" in wanted:
            results["replay"] = await bench_replay(args.replay_count)
        if "outbox" in wanted:
            results["outbox"] = bench_outbox(workdir, args.outbox_count, batch=500)
        if "throughput" in wanted:
            results["throughput"] = await bench_throughput(kafka, workdir, args.count)
        if "venue" in wanted:
            results["venue"] = await bench_venue(kafka, workdir, args.venue_count)
        if "latency" in wanted:
            results["latency"] = await bench_latency(kafka, workdir, args.rate, args.seconds)
        if "gating" in wanted:
            results["gating"] = await bench_gating(kafka, workdir, args.rate, args.seconds)
        return results
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description="execworker benchmarks (real local broker)")
    parser.add_argument("--count", type=int, default=30_000, help="decisions for the throughput run")
    parser.add_argument("--rate", type=int, default=1_000, help="msg/s for the latency run")
    parser.add_argument("--seconds", type=int, default=20, help="duration of the latency run")
    parser.add_argument("--outbox-count", type=int, default=100_000)
    parser.add_argument("--parity-count", type=int, default=1_000, help="decisions for the parity run")
    parser.add_argument("--replay-count", type=int, default=50_000, help="decisions for the replay run")
    parser.add_argument("--venue-count", type=int, default=10_000, help="decisions for the venue run")
    parser.add_argument("--decode-count", type=int, default=20_000)
    parser.add_argument(
        "--only", help="comma-separated subset: decode,replay,parity,outbox,throughput,venue,latency,gating"
    )
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "latest.json")
    args = parser.parse_args()
    results = asyncio.run(main_async(args))
    print(json.dumps(results, indent=2))
    # A partial run (--only) updates its own entries and keeps the others' latest figures.
    recorded = json.loads(args.json.read_text()) if args.only and args.json.is_file() else {}
    recorded.update(results)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(recorded, indent=2) + "\n")


if __name__ == "__main__":
    main()
