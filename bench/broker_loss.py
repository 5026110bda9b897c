"""Broker loss, full size: a worker run on a private three-broker cluster, once undisturbed and once
with the leader of exec-events partition 0 killed (SIGKILL) a third of the way through.

    .venv/bin/python -m bench.broker_loss [--count 10000] [--partitions 6] [--max-batch 100]

Starts `ops/kafka up --brokers 3` in a temporary directory (ports 19094-19099, or
$EXECWORKER_KAFKA_PORT) and stops it at the end. Prints one JSON object: run times, the failover
time (kill -> new leader in metadata), the longest stretch with no new committed exec-event, and
the exactly-once check (lost, doubled, outbox mismatches). `tests/broker/test_broker_loss.py` is
the small version that runs in `make test`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import orjson

from examples.gen_decisions import decisions
from worker.contract.enums import OrderStatus
from worker.contract.state_machine import is_terminal
from worker.io.kafka import KafkaConfig, read_committed_topic, topic_partitions
from worker.io.kafka_security import KafkaSecurity
from worker.io.outbox import Outbox
from worker.io.topics import TopicsFile, apply_topics, write_variant

ROOT = Path(__file__).resolve().parents[1]


async def leader(kafka: KafkaConfig, topic: str, partition: int) -> int:
    async with kafka.admin_session() as admin:
        (described,) = await admin.describe_topics([topic])
    return int(next(p["leader"] for p in described["partitions"] if p["partition"] == partition))


class Watch:
    """Follows the committed exec-events (read_committed) and records the longest stretch with
    no new one: how long the output stalled."""

    def __init__(self, kafka: KafkaConfig, topic: str) -> None:
        self.kafka, self.topic = kafka, topic
        self.count, self.longest_gap_s = 0, 0.0
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._follow())

    async def stop(self) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _follow(self) -> None:
        consumer = self.kafka.consumer(group_id=None, isolation_level="read_committed", auto_offset_reset="earliest")
        await consumer.start()
        try:
            consumer.assign(await topic_partitions(consumer, self.topic))
            last_change: float | None = None
            while True:
                batches = await consumer.getmany(timeout_ms=200)
                now = time.monotonic()
                got = sum(len(records) for records in batches.values())
                if got:
                    if last_change is not None:
                        self.longest_gap_s = max(self.longest_gap_s, now - last_change)
                    self.count += got
                    last_change = now
        finally:
            await consumer.stop()


async def one_run(
    kafka: KafkaConfig, home: Path, workdir: Path, count: int, partitions: int, max_batch: int, kill: bool
) -> dict[str, Any]:
    suffix = uuid.uuid4().hex[:8]
    path = workdir / f"topics-{suffix}.yaml"
    file: TopicsFile = write_variant(ROOT / "topics.yaml", path, suffix, partitions=partitions)
    async with kafka.admin_session() as admin:
        await apply_topics(admin, file, replication_override=3)
    values = [orjson.dumps(d) for d in decisions(count, seed=51)]
    producer = kafka.producer(acks="all", enable_idempotence=True, linger_ms=10)
    await producer.start()
    try:
        futures = [
            await producer.send(file.role("decisions").name, value=v, key=orjson.loads(v)["symbol"].encode())
            for v in values
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    exec_topic = file.role("exec_events").name
    outbox = workdir / f"outbox-{suffix}"
    args = [sys.executable, "-m", "worker", "run", "--until-drained", "--bootstrap-servers", kafka.bootstrap_servers]
    args += ["--topics", str(path), "--group", f"bl-{suffix}", "--outbox", str(outbox), "--metrics-port", "0"]
    args += ["--max-batch", str(max_batch)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAFKA_")}
    watch = Watch(kafka, exec_topic)
    await watch.start()
    log_path = workdir / f"worker-{suffix}.log"
    started = time.monotonic()
    # The worker's log goes to a file: a pipe nobody reads would block it once full.
    with log_path.open("wb") as log:
        worker = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log)
        victim, failover_s, killed_at_events = None, None, None
        while worker.poll() is None:
            if kill and victim is None and watch.count >= count // 3:
                victim = await leader(kafka, exec_topic, 0)
                pid = int((home / f"node{victim}" / "kafka.pid").read_text().strip())
                os.kill(pid, signal.SIGKILL)
                killed_at, killed_at_events = time.monotonic(), watch.count
                while True:
                    try:
                        if await leader(kafka, exec_topic, 0) not in (victim, -1):
                            break
                    except Exception:
                        pass
                    await asyncio.sleep(0.1)
                failover_s = time.monotonic() - killed_at
            await asyncio.sleep(0.1)
    elapsed = time.monotonic() - started
    await watch.stop()
    stderr = log_path.read_text(errors="replace")
    events = await read_committed_topic(kafka, exec_topic)
    terminal: Counter[str] = Counter()
    for record in events:
        event = orjson.loads(record.value)
        if is_terminal(OrderStatus(event["status"])):
            terminal[event["signal_row_id"]] += 1
    expected = {orjson.loads(v)["signal_row_id"] for v in values}
    mirror = Counter(Outbox(outbox).iter_lines())
    return {
        "killed": kill,
        "exit_code": worker.returncode,
        "stderr_tail": stderr[-500:] if worker.returncode else "",
        "run_s": round(elapsed, 1),
        "decisions_per_s": round(count / elapsed),
        "victim_node": victim,
        "killed_at_events": killed_at_events,
        "failover_s": round(failover_s, 1) if failover_s is not None else None,
        "longest_stall_s": round(watch.longest_gap_s, 1),
        "exec_events": len(events),
        "lost": len(expected - set(terminal)),
        "doubled": sum(1 for c in terminal.values() if c > 1),
        "outbox_mismatch": sum((mirror - Counter(r.value for r in events)).values())
        + sum((Counter(r.value for r in events) - mirror).values()),
    }


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--max-batch", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="execworker-broker-loss-") as tmp:
        home, workdir = Path(tmp) / "kafka", Path(tmp)
        env = {k: v for k, v in os.environ.items() if not k.startswith("KAFKA_")}
        env.update(
            EXECWORKER_KAFKA_HOME=str(home), EXECWORKER_KAFKA_PORT=os.environ.get("EXECWORKER_KAFKA_PORT", "19094")
        )
        env.setdefault("EXECWORKER_KAFKA_HEAP", "-Xms128m -Xmx384m")
        ops = [str(ROOT / "ops" / "kafka")]
        up = subprocess.run([*ops, "up", "--brokers", "3"], env=env, capture_output=True, text=True, check=False)
        if up.returncode != 0:
            print(up.stdout + up.stderr, file=sys.stderr)
            return 1
        try:
            kafka = KafkaConfig(up.stdout.strip().splitlines()[-1], connect_timeout_s=30, security=KafkaSecurity())
            await kafka.check_reachable()
            runs = [
                await one_run(kafka, home, workdir, args.count, args.partitions, args.max_batch, kill)
                for kill in (False, True)
            ]
        finally:
            subprocess.run([*ops, "down"], env=env, capture_output=True, check=False)
    print(json.dumps({"count": args.count, "partitions": args.partitions, "max_batch": args.max_batch, "runs": runs}))
    ok = all(r["exit_code"] == 0 and r["lost"] == 0 and r["doubled"] == 0 and r["outbox_mismatch"] == 0 for r in runs)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
