"""The live batch's CPU per decision and the outbox's per line, in process, without a broker.

    python -m bench.hotpath [--count 50000] [--batch 420] [--json bench/results/hotpath.json]

  batch   the generated decisions (seed 101) in per-symbol partitions of `--batch` records, through
          the calls the worker makes for a backtest batch: `plan_batch` (decode, gates, rounding,
          ids, intents), the executor's send (`VenueSync.send`), the exec-event encoding and
          outbox lines of `TransactionWriter.commit`, and `Accounting.committed`; CPU time of
          this thread per step (`time.thread_time`), so other processes on the machine do not
          count.
  outbox  the same decisions' exec-event lines published batch by batch per partition stream, as
          the mirror does (`Outbox.publish` + `set_mark`), then drained: user and system CPU of
          the whole process per line (the file writes and fsyncs are system time); then every
          line published again from mark 0 (a takeover whose outbox has them all already).

Absolute figures move with the machine's load; compare runs of two versions alternated.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from examples.gen_decisions import decisions
from worker.codec.json_codec import encode_json
from worker.codec.wire import JsonWire
from worker.core.backtest import BacktestExecutor
from worker.core.batch import plan_batch
from worker.core.engine import ExecutionEngine
from worker.core.intake import Intake
from worker.core.order_table import OrderTable
from worker.io.outbox import Outbox, OutboxLine, stream_of
from worker.policy.rng import Rng
from worker.runtime.accounting import Accounting
from worker.runtime.metrics import WorkerMetrics
from worker.runtime.orderlog import OrderLog
from worker.runtime.replay import list_sink, replay
from worker.runtime.summary import RunSummary
from worker.runtime.venue import VenueSync


@dataclass(frozen=True)
class Record:
    topic: str
    partition: int
    offset: int
    timestamp: int
    value: bytes
    key: bytes


def partitioned(values: list[bytes]) -> dict[int, list[Record]]:
    """One partition per symbol, offsets from 0: what a worker owning them all reads."""
    partitions: dict[str, int] = {}
    records: dict[int, list[Record]] = defaultdict(list)
    for value in values:
        symbol = orjson.loads(value)["symbol"]
        p = partitions.setdefault(symbol, len(partitions))
        records[p].append(Record("decisions", p, len(records[p]), 0, value, symbol.encode()))
    return records


async def bench_batch(values: list[bytes], batch: int) -> dict[str, Any]:
    engine = ExecutionEngine(BacktestExecutor(Rng(0)))
    codec = JsonWire()
    intake = Intake({"decisions": codec, "signals": codec}, "signals", engine.policy)
    venue = VenueSync(engine, 8)
    accounting = Accounting(RunSummary(), WorkerMetrics(), OrderLog())
    spent: Counter[str] = Counter()
    for records in partitioned(values).values():
        table, policy = OrderTable(), engine.policy.state.copy()
        for start in range(0, len(records), batch):
            t0 = time.thread_time()
            plan = plan_batch(engine, intake, table, policy, records[start : start + batch])
            t1 = time.thread_time()
            sent = await venue.send(table, plan.to_send)
            events = plan.events + [event for result in sent for event in result.events]
            dropped = plan.dropped + [result.dropped for result in sent if result.dropped]
            t2 = time.thread_time()
            payloads = [(event, encode_json(event)) for event in events]
            _rows = [(event.symbol.encode(), line) for event, line in payloads]
            _lines = [OutboxLine(e.symbol, e.event_ts_ms, e.event_id, line) for e, line in payloads]
            t3 = time.thread_time()
            table.commit()
            policy = plan.policy
            accounting.committed(plan.consumed, events, plan.dead, dropped, plan.switches)
            t4 = time.thread_time()
            spent["plan_batch"] += t1 - t0
            spent["send"] += t2 - t1
            spent["encode"] += t3 - t2
            spent["accounting"] += t4 - t3
    per = {step: round(seconds / len(values) * 1e6, 1) for step, seconds in spent.items()}
    return {"us_per_decision": round(sum(spent.values()) / len(values) * 1e6, 1), "steps_us": per}


def cpu() -> tuple[float, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


async def bench_outbox(values: list[bytes], batch: int) -> dict[str, Any]:
    lines: list[OutboxLine] = []
    await replay(ExecutionEngine(BacktestExecutor(Rng(0))), values, [list_sink(lines)])
    by_symbol: dict[str, list[OutboxLine]] = defaultdict(list)
    for line in lines:
        by_symbol[line.symbol].append(line)
    streams = sorted(by_symbol.items())
    with tempfile.TemporaryDirectory(prefix="execworker-hotpath-") as tmp:
        outbox = Outbox(Path(tmp))
        user, system = cpu()
        for p, (_, chunk) in enumerate(streams):
            for start in range(0, len(chunk), batch):
                outbox.publish(chunk[start : start + batch], stream_of("exec", p))
                outbox.set_mark("exec", p, start + batch)
        for p in range(len(streams)):
            outbox.drain(stream_of("exec", p))
        user2, system2 = cpu()
        files = len(outbox.ready_files())
        again = sum(outbox.publish(chunk, stream_of("exec", p)) for p, (_, chunk) in enumerate(streams))
        user3, system3 = cpu()
    assert again == 0
    n = len(lines)
    return {
        "lines": n,
        "files": files,
        "publish_user_us_per_line": round((user2 - user) / n * 1e6, 1),
        "publish_system_us_per_line": round((system2 - system) / n * 1e6, 1),
        "republish_cpu_us_per_line": round((user3 - user2 + system3 - system2) / n * 1e6, 1),
    }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    values = [orjson.dumps(d) for d in decisions(args.count, seed=101)]
    results: dict[str, Any] = {"count": args.count, "batch": args.batch}
    if "batch" in args.only:
        results["batch"] = await bench_batch(values, args.batch)
    if "outbox" in args.only:
        results["outbox"] = await bench_outbox(values, args.batch)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description="the live batch's CPU per decision, the outbox's per line")
    parser.add_argument("--count", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=420, help="records per partition batch (the bench's ~420)")
    parser.add_argument("--only", default="batch,outbox", help="comma-separated: batch,outbox")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    args.only = set(args.only.split(","))
    results = asyncio.run(main_async(args))
    text = json.dumps(results, indent=2)
    print(text)
    if args.json is not None:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
