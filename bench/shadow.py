"""Shadow execution on the bundled sample: parity and throughput cost (issue 12 item 1).

Primary: the sandbox exchange over real HTTP (no rate limits), through the live path (intent
committed, sent, answer committed). Shadow: `backtest:quote`. Both see the same market: the
sandbox's quote of each symbol is pinned (`POST /sandbox/quote`) to the first snapshot of that
symbol in examples/market.jsonl, and the shadow's market view holds that same snapshot (dated
before the first decision). The orders that pass the primary's gates go to both; parity is the
share of compared orders that agree (worker/core/parity.py).

Throughput cost: passes of the sample with and without the shadow, interleaved (ROUNDS of
each), each on fresh topics; the cost is 1 - (median msg/s with) / (median msg/s without).

    python -m bench.shadow [--rounds 3] [--out bench/results/shadow.json]

Wall-clock time is used here, and only here: a benchmark measures the shell, it produces no events.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import orjson
from aiohttp import ClientSession, web

from bench.run import bench_settings, drop_topics, fresh_topics, produce_all
from worker.codec.wire import WireCodec
from worker.contract.events import ExecEvent
from worker.contract.messages import MarketSnapshot
from worker.contract.orders import OrderCtx
from worker.core.backtest import BacktestExecutor
from worker.core.engine import CommandResult, ExecutionEngine, Prepared
from worker.core.fills import QuoteFill
from worker.core.live_market import LiveMarketView
from worker.core.order_table import OrderTable
from worker.io.binance.client import BinanceClient, VenueCredentials
from worker.io.binance.executor import BinanceExecutor
from worker.io.kafka import KafkaConfig, bootstrap_from_env, read_committed_topic
from worker.io.topics import codec_for
from worker.policy.rng import Rng
from worker.runtime.orderlog import ORDER_LOGGER
from worker.runtime.shadow import SHADOW_ROLE, ShadowDriver, attach
from worker.runtime.worker import ExecWorker
from worker.sandbox.faults import FaultPlan
from worker.sandbox.limits import Limits
from worker.sandbox.matching import DEFAULT_SYMBOLS, Market
from worker.sandbox.server import DEFAULT_API_KEY, DEFAULT_API_SECRET, SandboxExchange

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "examples" / "decisions.jsonl"
MARKET = ROOT / "examples" / "market.jsonl"
PARITY_GATE = 0.99
DRAIN_TIMEOUT_S = 120


def sample_values() -> list[bytes]:
    return [line for line in SAMPLE.read_bytes().splitlines() if line.strip()]


def pinned_market(values: list[bytes]) -> list[MarketSnapshot]:
    """One snapshot per symbol: its first in the sample's market, dated before the first decision."""
    first_ms = min(orjson.loads(v)["event_ts_ms"] for v in values)
    seen: dict[str, MarketSnapshot] = {}
    for line in MARKET.read_bytes().splitlines():
        snapshot = MarketSnapshot.model_validate_json(line)
        seen.setdefault(snapshot.symbol, snapshot.model_copy(update={"event_time_ms": first_ms - 1_000}))
    return [seen[symbol] for symbol in sorted(seen)]


@asynccontextmanager
async def pinned_sandbox(market: list[MarketSnapshot]) -> AsyncIterator[tuple[str, SandboxExchange]]:
    """The sandbox exchange on a free port, without rate limits, its quotes pinned to `market`."""
    exchange = SandboxExchange(
        Market(DEFAULT_SYMBOLS, random.Random(0)), FaultPlan.parse(None), 0, limits=Limits.unlimited()
    )
    runner = web.AppRunner(exchange.app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        await pin_quotes(url, market)
        yield url, exchange
    finally:
        await runner.cleanup()


async def pin_quotes(url: str, market: list[MarketSnapshot]) -> None:
    async with ClientSession() as session:
        for snapshot in market:
            body = {"symbol": snapshot.symbol, "bid": str(snapshot.bid), "ask": str(snapshot.ask)}
            async with session.post(f"{url}/sandbox/quote", json=body) as response:
                response.raise_for_status()


@dataclass
class Pass:
    shadow: bool
    consumed: int
    seconds: float
    msg_per_s: float
    cpu_seconds: float = 0.0  # process CPU time of the pass (the in-process sandbox included)
    compared: int = 0
    parity: float = 1.0  # the gauge: the last PARITY_WINDOW compared orders
    parity_all: float = 1.0  # over every compared order of the pass
    mismatches: dict[str, float] | None = None
    shadow_events: int = 0
    orders_sent: int = 0
    # CPU spent in the shadow's own code in this pass (sending to the backtest, comparing, encoding
    # its events; not the producer's append of its records): the cost measured inside one run.
    shadow_cpu_seconds: float = 0.0


class _Timed(ShadowDriver):
    """The driver with the CPU time of its own work added up (the backtest shadow never yields
    inside `_bounded`, so the thread's CPU time over it is the shadow's alone)."""

    cpu = 0.0

    async def _bounded(self, book: OrderTable, to_send: Sequence[Prepared], answers: dict[int, CommandResult]) -> None:
        started = time.thread_time()
        await super()._bounded(book, to_send, answers)
        self.cpu += time.thread_time() - started

    def record(self, pairs: Sequence[tuple[OrderCtx, ExecEvent | None, ExecEvent | None]]) -> None:
        started = time.thread_time()
        super().record(pairs)
        self.cpu += time.thread_time() - started


class _TimedCodec:
    def __init__(self, codec: WireCodec, driver: _Timed) -> None:
        self._codec, self._driver = codec, driver

    def encode(self, event: ExecEvent) -> bytes:
        started = time.thread_time()
        value = self._codec.encode(event)
        self._driver.cpu += time.thread_time() - started
        return value


async def shadow_pass(
    kafka: KafkaConfig, workdir: Path, url: str, market: list[MarketSnapshot], shadow: bool, values: list[bytes]
) -> Pass:
    """The sample through a fresh worker (in process) against the sandbox, with or without a shadow."""
    path, topics = await fresh_topics(kafka, workdir)
    group = f"shadow-{uuid.uuid4().hex[:8]}"
    try:
        await produce_all(kafka, topics.role("decisions").name, values)
        settings = bench_settings(kafka, path, group, workdir / f"outbox-{group}")
        venue = BinanceExecutor(
            BinanceClient(url, VenueCredentials(DEFAULT_API_KEY, DEFAULT_API_SECRET)), venue_name="sandbox"
        )
        worker = ExecWorker(settings, topics, ExecutionEngine(venue, clock=venue.clock))
        driver = None
        if shadow:
            view = LiveMarketView()
            for snapshot in market:  # as the control feed hands market.v1 over (tested in tests/broker)
                view.add(snapshot)
            role = topics.role(SHADOW_ROLE)
            driver = _Timed(
                ExecutionEngine(BacktestExecutor(Rng(0), fills=QuoteFill(), market=view)),
                worker.metrics,
                (role.name, codec_for(role, ROOT / "schemas")),
            )
            driver.topic = (role.name, _TimedCodec(driver.topic[1], driver))  # type: ignore[assignment]
            attach(worker, driver, view)
        started, cpu = time.perf_counter(), time.process_time()
        summary = await asyncio.wait_for(worker.run(), timeout=DRAIN_TIMEOUT_S)
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        result = Pass(shadow, summary.consumed, round(seconds, 3), round(summary.consumed / seconds, 1), round(cpu, 3))
        if driver is not None:
            registry = worker.metrics.registry
            result.compared = int(registry.get_sample_value("executor_shadow_compared_total") or 0)
            result.parity = round(driver.window.ratio(), 4)
            result.parity_all = round(1 - driver.mismatched / driver.compared, 4) if driver.compared else 1.0
            result.shadow_cpu_seconds = round(driver.cpu, 3)
            result.mismatches = {
                s.labels["field"]: s.value
                for metric in worker.metrics.shadow_mismatch.collect()
                for s in metric.samples
                if s.name.endswith("_total")
            }
            shadow_records = await read_committed_topic(kafka, topics.role(SHADOW_ROLE).name)
            result.shadow_events = len(shadow_records)
            exec_records = await read_committed_topic(kafka, topics.role("exec_events").name)
            result.orders_sent = len(
                {
                    e["client_order_id"]
                    for e in (orjson.loads(r.value) for r in exec_records)
                    if e["status"] == "SUBMITTED"
                }
            )
        return result
    finally:
        await drop_topics(kafka, topics)


async def main_async(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger(ORDER_LOGGER).setLevel(logging.ERROR)
    logging.getLogger("aiokafka").setLevel(logging.ERROR)
    kafka = KafkaConfig(bootstrap_from_env(), connect_timeout_s=10)
    await kafka.check_reachable()
    values = sample_values()
    market = pinned_market(values)
    passes: list[Pass] = []
    with tempfile.TemporaryDirectory(prefix="execworker-shadow-") as tmp:
        async with pinned_sandbox(market) as (url, _):
            for round_ in range(args.rounds):
                # Alternate which goes first, so that a warming or cooling machine favours neither.
                for shadow in (False, True) if round_ % 2 == 0 else (True, False):
                    done = await shadow_pass(kafka, Path(tmp), url, market, shadow, values)
                    passes.append(done)
                    label = "with   " if shadow else "without"
                    print(f"  {label} shadow: {done.msg_per_s:8.1f} msg/s, {done.cpu_seconds:.2f} s CPU", flush=True)
    without = statistics.median(p.msg_per_s for p in passes if not p.shadow)
    with_ = statistics.median(p.msg_per_s for p in passes if p.shadow)
    cost = 1 - with_ / without
    # CPU per pass: the least of each kind (what the work costs when nothing else runs).
    cpu_without = min(p.cpu_seconds for p in passes if not p.shadow)
    cpu_with = min(p.cpu_seconds for p in passes if p.shadow)
    cpu_cost = cpu_with / cpu_without - 1
    # Adjacent passes (each round's pair) cancel the drift of a long-lived process and sandbox.
    pairs = [passes[i : i + 2] for i in range(0, len(passes) - 1, 2)]
    paired = statistics.median(
        next(p.cpu_seconds for p in pair if p.shadow) / next(p.cpu_seconds for p in pair if not p.shadow)
        for pair in pairs
    )
    # Inside each shadowed pass: the shadow's own CPU over the rest of the pass's CPU.
    own = statistics.median(p.shadow_cpu_seconds / (p.cpu_seconds - p.shadow_cpu_seconds) for p in passes if p.shadow)
    shadowed = [p for p in passes if p.shadow]
    report = {
        "sample": str(SAMPLE.relative_to(ROOT)),
        "primary": "sandbox (HTTP, --limits unlimited)",
        "shadow": "backtest:quote",
        "rounds": args.rounds,
        "median_msg_per_s_without": without,
        "median_msg_per_s_with": with_,
        "throughput_cost": round(cost, 4),
        "min_cpu_seconds_without": cpu_without,
        "min_cpu_seconds_with": cpu_with,
        "cpu_cost": round(cpu_cost, 4),
        "cpu_cost_paired_median": round(paired - 1, 4),
        "shadow_own_cpu_share": round(own, 4),
        "parity_min": min(p.parity for p in shadowed),
        "passes": [asdict(p) for p in passes],
    }
    print(
        f"shadow cost {cost:.1%} of throughput (median {with_:.0f} vs {without:.0f} msg/s), {cpu_cost:.1%} of CPU "
        f"(min {cpu_with:.2f} vs {cpu_without:.2f} s), {paired - 1:.1%} of CPU paired by round; "
        f"its own code {own:.1%} of the rest of a pass's CPU; parity min {report['parity_min']}"
    )
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.shadow", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="passes with and without the shadow, each")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    return asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
