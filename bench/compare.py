"""`make bench-compare`: execworker against the references, one run each, same machine, same broker.

  pipeline  100k decisions in one input topic, read by three exactly-once consumers in turn, each
            with its own group and output topic: the execworker worker (backtest executor,
            outbox), Quix Streams exactly-once doing the same transform (bench/quix_eos.py, in
            the bench-only .venv-bench), and the minimal aiokafka exactly-once echo (consume,
            produce, offsets in one transaction, no work). Rates include each one's group join.
  replay    `execworker replay --from-file` of the same decisions vs a bare Python loop of
            `orjson.loads` over the same file; both whole processes, best of three.
  latency   p95 produce -> output visible to a read_committed reader, at a steady 500/s for 20 s:
            the worker (decisions -> exec-events) vs the minimal aiokafka exactly-once echo (own
            input and output topics, the worker's consumer settings: fetch_max_wait_ms 20,
            max 500 records a poll), alternated, each after a warm-up whose outputs are awaited;
            and the same echo with one transactional producer per partition (the worker's shape).
  rebuild   the takeover rebuild of a 6-partition exec-events topic holding the exec-events of the
            same decisions (keyed by symbol, as the worker writes them), through the compiled fold
            vs the pydantic fold it replaced (`rebuild_partitions(fold="reference")`), alternated,
            best of three (and the compiled fold through aiokafka's consumer instead of the
            record-batch reader): with the outbox caught up (a takeover: the previous owner
            published) and with a fresh outbox (every event re-published, as `bench.run --only
            throughput` measures it); and the fold alone, in process, on the same values. The
            topic is written in transactions, as the worker writes it.

Ratios go to BENCHMARKS.md; the raw figures to bench/results/compare.json. Wall-clock time is
used here, and only here: benchmarks measure the shell, they produce no events.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
from aiokafka.admin import NewTopic

from bench.run import drop_topics, fresh_topics, produce_all, worker_for
from examples.gen_decisions import decisions
from worker.codec.wire import JsonWire
from worker.core.backtest import BacktestExecutor
from worker.core.engine import ExecutionEngine
from worker.core.history import CompiledHistory, HistoryRecord, JsonRecord, ReferenceHistory
from worker.io.kafka import KafkaConfig, bootstrap_from_env, topic_partitions
from worker.io.outbox import Outbox, OutboxLine
from worker.policy.pretrade import PreTradePolicy
from worker.policy.rng import Rng
from worker.runtime.recovery import rebuild_partitions
from worker.runtime.replay import list_sink, replay
from worker.runtime.summary import percentile

ROOT = Path(__file__).resolve().parents[1]
ORJSON_LOOP = """
import sys, orjson
with open(sys.argv[1], "rb") as handle:
    for line in handle:
        orjson.loads(line)
"""


async def create_topic(kafka: KafkaConfig, name: str, partitions: int) -> None:
    async with kafka.admin_session() as admin:
        await admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])


async def echo_forever(
    kafka: KafkaConfig, source: str, target: str, stop: asyncio.Event, per_partition: bool = False
) -> None:
    """The latency floor: the minimal exactly-once echo, with the worker's consumer settings.

    `per_partition`: one transactional producer per input partition, each poll's partitions
    committed concurrently (the worker's shape, which fences per partition), instead of one
    transaction per poll: what that shape costs on its own, with no work."""
    group = f"echo-lat-{uuid.uuid4().hex[:8]}"
    consumer = kafka.consumer(
        source,
        group_id=group,
        isolation_level="read_committed",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=20,
        max_poll_records=500,
    )
    producers: dict[int, Any] = {}

    async def producer_for(partition: int) -> Any:
        key = partition if per_partition else -1
        if key not in producers:
            producers[key] = kafka.producer(
                transactional_id=f"{group}-{key}", enable_idempotence=True, acks="all", linger_ms=5
            )
            await producers[key].start()
        return producers[key]

    async def commit(parts: dict[Any, Any]) -> None:
        producer = await producer_for(next(iter(parts)).partition)
        async with producer.transaction():
            offsets = {}
            for tp, records in parts.items():
                for record in records:
                    await producer.send(target, value=record.value, key=record.key, partition=tp.partition)
                offsets[tp] = records[-1].offset + 1
            await producer.send_offsets_to_transaction(offsets, group)

    await consumer.start()
    try:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=100, max_records=500)
            if not batches:
                continue
            if per_partition:
                await asyncio.gather(*(commit({tp: records}) for tp, records in batches.items()))
            else:
                await commit(batches)
    finally:
        await consumer.stop()
        for producer in producers.values():
            await producer.stop()


async def drive(
    kafka: KafkaConfig, source: str, target: str, rate: int, seconds: int, seed: int, under_test: asyncio.Task[Any]
) -> dict[str, Any]:
    """Produces decisions at `rate`/s into `source` and times each one until a read_committed
    reader of `target` sees an output carrying its signal_row_id (after 20 awaited warm-ups)."""
    warm = 20
    count = rate * seconds
    values = [orjson.dumps(d) for d in decisions(warm + count, seed=seed)]
    ids = [orjson.loads(v)["signal_row_id"] for v in values]
    keys = [orjson.loads(v)["symbol"].encode() for v in values]
    seen_at: dict[str, float] = {}
    warmed = asyncio.Event()
    consumer = kafka.consumer(
        group_id=None, isolation_level="read_committed", enable_auto_commit=False, fetch_max_wait_ms=20
    )
    await consumer.start()
    producer = kafka.producer(acks="all", enable_idempotence=True, linger_ms=0)
    await producer.start()
    try:
        tps = await topic_partitions(consumer, target)
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)

        # Only this run's outputs count: the target may hold an earlier round's (a worker's round
        # shares its topics), which once ended the reader before the warm-up was seen.
        waiting_for = set(ids)

        async def read() -> None:
            while waiting_for:
                batches = await consumer.getmany(timeout_ms=100)
                now = time.perf_counter()
                for records in batches.values():
                    for record in records:
                        row = orjson.loads(record.value)["signal_row_id"]
                        if row in waiting_for:
                            waiting_for.discard(row)
                            seen_at[row] = now
                if not warmed.is_set() and all(i in seen_at for i in ids[:warm]):
                    warmed.set()

        reader = asyncio.create_task(read())
        for value, key in zip(values[:warm], keys[:warm], strict=True):
            await producer.send(source, value=value, key=key)
        waiting = asyncio.ensure_future(warmed.wait())
        await asyncio.wait([waiting, under_test], timeout=60, return_when=asyncio.FIRST_COMPLETED)
        if not warmed.is_set():
            waiting.cancel()
            reader.cancel()
            ended = under_test.result() if under_test.done() else "still running"
            raise RuntimeError(f"no output for the warm-up within 60 s (the contender: {ended!r})")
        sent_at: dict[str, float] = {}
        interval = 1.0 / rate
        start = time.perf_counter()
        for index in range(count):
            delay = start + index * interval - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            sent_at[ids[warm + index]] = time.perf_counter()
            await producer.send(source, value=values[warm + index], key=keys[warm + index])
        await producer.flush()
        achieved = count / (time.perf_counter() - start)
        await asyncio.wait_for(reader, timeout=120)
    finally:
        await producer.stop()
        await consumer.stop()
    latencies = sorted((seen_at[k] - sent_at[k]) * 1000 for k in sent_at)
    return {
        "rate_achieved": round(achieved),
        "messages": count,
        "p50_ms": round(percentile(latencies, 0.50), 1),
        "p95_ms": round(percentile(latencies, 0.95), 1),
        "p99_ms": round(percentile(latencies, 0.99), 1),
        "max_ms": round(latencies[-1], 1),
    }


async def bench_latency(kafka: KafkaConfig, workdir: Path, rate: int, seconds: int, rounds: int) -> dict[str, Any]:
    path, topics = await fresh_topics(kafka, workdir)
    source = topics.role("decisions").name
    partitions = topics.role("decisions").partitions
    echo_in, echo_out = f"{source}.echo-lat-in", f"{source}.echo-lat-out"
    result: dict[str, Any] = {"rate": rate, "seconds": seconds, "execworker": [], "echo": [], "echo_per_partition": []}
    created: list[str] = []
    try:
        for round_ in range(rounds):
            for attempt in range(3):
                # A start that does not answer the warm-up within 60 s is retried, not timed.
                outbox = workdir / f"outbox-lat-{round_}-{attempt}"
                worker = worker_for(kafka, path, topics, outbox, until_drained=False)
                task = asyncio.create_task(worker.run())
                try:
                    exec_topic = topics.role("exec_events").name
                    figures = await drive(
                        kafka, source, exec_topic, rate, seconds, seed=300 + round_ + 10 * attempt, under_test=task
                    )
                except RuntimeError as exc:
                    result.setdefault("retried_starts", []).append(str(exc))
                    continue
                finally:
                    worker.request_stop()
                    await task
                result["execworker"].append(figures)
                break
            for variant, (name, per_partition) in enumerate((("echo", False), ("echo_per_partition", True))):
                # Own topics per run: an echo's new group reads its input from the start.
                run_in, run_out = f"{echo_in}-{round_}-{variant}", f"{echo_out}-{round_}-{variant}"
                for topic in (run_in, run_out):
                    await create_topic(kafka, topic, partitions)
                    created.append(topic)
                stop = asyncio.Event()
                echo = asyncio.create_task(echo_forever(kafka, run_in, run_out, stop, per_partition))
                try:
                    seed = 400 + 10 * round_ + variant
                    result[name].append(await drive(kafka, run_in, run_out, rate, seconds, seed, echo))
                finally:
                    stop.set()
                    await echo
    finally:
        async with kafka.admin_session() as admin:
            if created:
                await admin.delete_topics(created)
        await drop_topics(kafka, topics)
    ours = min(r["p95_ms"] for r in result["execworker"])
    floor = min(r["p95_ms"] for r in result["echo"])
    result["p95_execworker_ms"], result["p95_echo_ms"] = ours, floor
    result["p95_ratio"] = round(ours / floor, 2)
    result["p95_echo_per_partition_ms"] = min(r["p95_ms"] for r in result["echo_per_partition"])
    result["target_ms"] = round(1.2 * floor + 5, 1)
    result["target_met"] = ours <= 1.2 * floor + 5
    result["note"] = f"best p95 of {rounds} alternated rounds each; target: <= 1.2 x echo + 5 ms"
    return result


async def bench_echo(kafka: KafkaConfig, source: str, target: str, count: int) -> dict[str, Any]:
    """The floor: consume, produce the same bytes, commit the offsets in the same transaction."""
    group = f"echo-{uuid.uuid4().hex[:8]}"
    consumer = kafka.consumer(
        source, group_id=group, isolation_level="read_committed", enable_auto_commit=False, auto_offset_reset="earliest"
    )
    producer = kafka.producer(transactional_id=group, enable_idempotence=True, acks="all", linger_ms=5)
    started = time.perf_counter()
    await producer.start()
    await consumer.start()
    done = 0
    try:
        while done < count:
            batches = await consumer.getmany(timeout_ms=100, max_records=5000)
            if not batches:
                continue
            async with producer.transaction():
                offsets = {}
                for partition, records in batches.items():
                    for record in records:
                        await producer.send(target, value=record.value, key=record.key)
                    offsets[partition] = records[-1].offset + 1
                    done += len(records)
                await producer.send_offsets_to_transaction(offsets, group)
        elapsed = time.perf_counter() - started
    finally:
        await consumer.stop()
        await producer.stop()
    return {"messages": done, "seconds": round(elapsed, 2), "per_s": round(done / elapsed)}


def bench_quix(quix_python: str, bootstrap: str, source: str, target: str, count: int) -> dict[str, Any]:
    group = f"quix-{uuid.uuid4().hex[:8]}"
    command = [quix_python, str(ROOT / "bench" / "quix_eos.py"), "--bootstrap", bootstrap]
    command += ["--input", source, "--output", target, "--group", group, "--count", str(count)]
    started = time.perf_counter()
    out = subprocess.run(command, check=True, capture_output=True, text=True, timeout=1800)
    process_s = time.perf_counter() - started
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    return {
        "messages": figures["messages"],
        "seconds": figures["seconds"],
        "per_s": round(figures["messages"] / figures["seconds"]),
        "process_seconds": round(process_s, 2),
        "note": "timed inside the process, from Application.run to the count (group join included)",
    }


async def bench_execworker(kafka: KafkaConfig, path: Path, topics: Any, workdir: Path, count: int) -> dict[str, Any]:
    worker = worker_for(kafka, path, topics, workdir / "outbox-compare", until_drained=True)
    started = time.perf_counter()
    summary = await worker.run()
    elapsed = time.perf_counter() - started
    assert summary.events == count, (summary.events, count)
    return {"messages": count, "seconds": round(elapsed, 2), "per_s": round(count / elapsed)}


def timed_process(command: list[str]) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user + system) of one whole process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def bench_replay(path: Path, count: int, runs: int = 3) -> dict[str, Any]:
    execworker = str(Path(sys.executable).parent / "execworker")
    replay_runs = [timed_process([execworker, "replay", "--from-file", str(path)]) for _ in range(runs)]
    loop_runs = [timed_process([sys.executable, "-c", ORJSON_LOOP, str(path)]) for _ in range(runs)]
    replay_wall, replay_cpu = min(r[0] for r in replay_runs), min(r[1] for r in replay_runs)
    loop_wall, loop_cpu = min(r[0] for r in loop_runs), min(r[1] for r in loop_runs)
    return {
        "decisions": count,
        "replay_wall_s": round(replay_wall, 3),
        "replay_cpu_s": round(replay_cpu, 3),
        "orjson_loop_wall_s": round(loop_wall, 3),
        "orjson_loop_cpu_s": round(loop_cpu, 3),
        "replay_per_s": round(count / replay_wall),
        "orjson_loop_per_s": round(count / loop_wall),
        "ratio_wall": round(loop_wall / replay_wall, 3),
        "ratio_cpu": round(loop_cpu / replay_cpu, 3),
        "note": f"whole processes, best of {runs}; ratio = orjson loop time / replay time",
    }


def _fold_rate(kind: type[CompiledHistory] | type[ReferenceHistory], records: list[HistoryRecord]) -> float:
    history = kind("bench", PreTradePolicy.default())
    started = time.perf_counter()
    for start in range(0, len(records), 10_000):
        history.feed(records[start : start + 10_000], end=len(records), mark=len(records))
    history.finish()
    return len(records) / (time.perf_counter() - started)


# The rebuild's contenders, alternated in each round: (name, fold, reader).
REBUILDS = (
    ("reference", "reference", "consumer"),  # the pydantic fold through aiokafka's consumer (before)
    ("compiled_consumer", "compiled", "consumer"),  # the compiled fold through the consumer
    ("compiled", "compiled", "batches"),  # the compiled fold over the raw record batches (the worker's)
)


async def bench_rebuild(kafka: KafkaConfig, values: list[bytes], workdir: Path, rounds: int = 3) -> dict[str, Any]:
    """Events/s of the takeover rebuild, compiled vs the pydantic fold, in the same run."""
    lines: list[OutboxLine] = []
    await replay(ExecutionEngine(BacktestExecutor(Rng(0))), values, [list_sink(lines)])
    events = [line.payload for line in lines]
    records: list[HistoryRecord] = [JsonRecord(offset, value) for offset, value in enumerate(events)]
    result: dict[str, Any] = {"events": len(events), "partitions": 6}
    folds = {kind: max(_fold_rate(kind, records) for _ in range(2)) for kind in (ReferenceHistory, CompiledHistory)}
    result["fold_only_per_s"] = {"compiled": round(folds[CompiledHistory]), "reference": round(folds[ReferenceHistory])}
    result["fold_only_ratio"] = round(folds[CompiledHistory] / folds[ReferenceHistory], 2)
    topic = f"bench-rebuild-{uuid.uuid4().hex[:8]}"
    await create_topic(kafka, topic, 6)
    try:
        # As the worker writes them: in transactions (here of 1,000 events), so the partitions
        # hold the control batches (commit markers) a takeover reads past.
        producer = kafka.producer(transactional_id=f"{topic}-writer", enable_idempotence=True, linger_ms=10)
        await producer.start()
        try:
            for start in range(0, len(lines), 1000):
                async with producer.transaction():
                    for line in lines[start : start + 1000]:
                        await producer.send(topic, value=line.payload, key=line.symbol.encode())
        finally:
            await producer.stop()

        async def run(fold: str, reader: str, outbox: Outbox) -> float:
            started = time.perf_counter()
            rebuilt = await rebuild_partitions(
                kafka,
                topic,
                JsonWire(),
                list(range(6)),
                outbox,
                PreTradePolicy.default(),
                fold=fold,  # type: ignore[arg-type]
                reader=reader,  # type: ignore[arg-type]
            )
            elapsed = time.perf_counter() - started
            assert sum(r.events_read for r in rebuilt.values()) == len(events)
            return len(events) / elapsed

        caught_up = Outbox(workdir / "outbox-rebuild-caught-up")
        for p in range(6):
            caught_up.set_mark(topic, p, 2**62)  # a takeover: nothing left to re-publish
        rates: dict[str, list[float]] = {name: [] for name, _, _ in REBUILDS}
        for _ in range(rounds):
            for name, fold, reader in REBUILDS:
                rates[name].append(await run(fold, reader, caught_up))
        fresh = {
            name: await run(fold, reader, Outbox(workdir / f"outbox-rebuild-{name}"))
            for name, fold, reader in REBUILDS
            if name != "compiled_consumer"
        }
    finally:
        async with kafka.admin_session() as admin:
            await admin.delete_topics([topic])
    best = {name: max(r) for name, r in rates.items()}
    result["caught_up_per_s"] = {name: round(rate) for name, rate in best.items()}
    result["caught_up_runs_per_s"] = {name: [round(rate) for rate in r] for name, r in rates.items()}
    result["caught_up_ratio"] = round(best["compiled"] / best["reference"], 2)
    result["caught_up_ratio_through_consumer"] = round(best["compiled_consumer"] / best["reference"], 2)
    result["fresh_outbox_per_s"] = {name: round(rate) for name, rate in fresh.items()}
    result["fresh_outbox_ratio"] = round(fresh["compiled"] / fresh["reference"], 2)
    result["note"] = (
        "policy: PreTradePolicy.default() (as the worker passes it); written in transactions of 1,000 events; "
        f"caught-up: best of {rounds}, alternated; compiled = the record-batch reader (the worker's), "
        "compiled_consumer = the compiled fold through aiokafka's consumer, reference = the pydantic fold"
    )
    return result


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    kafka = KafkaConfig(bootstrap_from_env(None))
    await kafka.check_reachable()
    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} cpus, Python {platform.python_version()}",
        "count": args.count,
    }
    with tempfile.TemporaryDirectory(prefix="execworker-compare-") as tmp:
        workdir = Path(tmp)
        values = [orjson.dumps(d) for d in decisions(args.count, seed=101)]
        file = workdir / "decisions.jsonl"
        file.write_bytes(b"\n".join(values) + b"\n")
        if "replay" in args.only:
            results["replay"] = bench_replay(file, args.count)
        if "latency" in args.only:
            results["latency"] = await bench_latency(kafka, workdir, args.rate, args.seconds, args.rounds)
        if "rebuild" in args.only:
            results["rebuild"] = await bench_rebuild(kafka, values, workdir)
        if "pipeline" in args.only:
            path, topics = await fresh_topics(kafka, workdir)
            source = topics.role("decisions").name
            partitions = topics.role("decisions").partitions
            extra = [f"{source}.echo-out", f"{source}.quix-out"]
            try:
                for name in extra:
                    await create_topic(kafka, name, partitions)
                await produce_all(kafka, source, values)
                pipeline: dict[str, Any] = {"partitions": partitions}
                pipeline["execworker"] = await bench_execworker(kafka, path, topics, workdir, args.count)
                pipeline["quix"] = bench_quix(args.quix_python, kafka.bootstrap_servers, source, extra[1], args.count)
                pipeline["echo"] = await bench_echo(kafka, source, extra[0], args.count)
                ours = pipeline["execworker"]["per_s"]
                pipeline["ratio_vs_quix"] = round(ours / pipeline["quix"]["per_s"], 3)
                pipeline["ratio_vs_echo"] = round(ours / pipeline["echo"]["per_s"], 3)
                results["pipeline"] = pipeline
            finally:
                async with kafka.admin_session() as admin:
                    await admin.delete_topics(extra)
                await drop_topics(kafka, topics)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description="execworker vs Quix Streams, the aiokafka echo and orjson")
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument(
        "--only", default="replay,pipeline,latency,rebuild", help="comma-separated: replay,pipeline,latency,rebuild"
    )
    parser.add_argument("--rate", type=int, default=500, help="latency: messages per second")
    parser.add_argument("--seconds", type=int, default=20, help="latency: seconds per round")
    parser.add_argument("--rounds", type=int, default=2, help="latency: alternated rounds per contender")
    parser.add_argument("--quix-python", default=str(ROOT / ".venv-bench" / "bin" / "python"))
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "compare.json")
    args = parser.parse_args()
    args.only = set(args.only.split(","))
    results = asyncio.run(main_async(args))
    text = json.dumps(results, indent=2)
    print(text)
    args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
