"""`make bench-compare`: execworker against the references, one run each, same machine, same broker.

  pipeline  100k decisions in one input topic, read by three exactly-once consumers in turn, each
            with its own group and output topic: the execworker worker (backtest executor,
            outbox), Quix Streams exactly-once doing the same transform (bench/quix_eos.py, in
            the bench-only .venv-bench), and the minimal aiokafka exactly-once echo (consume,
            produce, offsets in one transaction, no work). Rates include each one's group join.
  replay    `execworker replay --from-file` of the same decisions vs a bare Python loop of
            `orjson.loads` over the same file; both whole processes, best of three.

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
from worker.io.kafka import KafkaConfig, bootstrap_from_env

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
    parser.add_argument("--only", default="replay,pipeline", help="comma-separated: replay,pipeline")
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
