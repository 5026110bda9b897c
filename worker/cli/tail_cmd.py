"""`execworker tail`: print committed messages of a topic (read_committed), one per line."""

from __future__ import annotations

import argparse
import sys

from worker.cli.common import add_kafka_options, kafka_from, resolve_topic, topics_from
from worker.io.kafka import topic_partitions


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    tail = sub.add_parser("tail", help="print committed messages of a topic")
    tail.add_argument("--topic", default="exec_events", help="topic name or role (default: exec_events)")
    tail.add_argument("--from-beginning", action="store_true", help="start at the earliest offset")
    tail.add_argument("--limit", type=int, default=0, help="stop after N messages (0 = follow)")
    add_kafka_options(tail)
    tail.set_defaults(handler=run_tail)


async def run_tail(args: argparse.Namespace) -> int:
    topic = resolve_topic(topics_from(args), args.topic)
    kafka = kafka_from(args)
    await kafka.check_reachable()
    consumer = kafka.consumer(group_id=None, isolation_level="read_committed", enable_auto_commit=False)
    await consumer.start()
    try:
        tps = await topic_partitions(consumer, topic)
        consumer.assign(tps)
        if args.from_beginning:
            await consumer.seek_to_beginning(*tps)
        else:
            await consumer.seek_to_end(*tps)
        printed = 0
        out = sys.stdout.buffer
        while args.limit == 0 or printed < args.limit:
            batches = await consumer.getmany(timeout_ms=1000)
            for record in (r for records in batches.values() for r in records):
                if args.limit and printed >= args.limit:
                    break
                out.write((record.value or b"") + b"\n")
                printed += 1
            out.flush()
    finally:
        await consumer.stop()
    return 0
