"""`execworker produce FILE --topic T`: publish a JSONL file, one message per line, keyed by symbol."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

import orjson

from worker.cli.common import UsageError, add_kafka_options, kafka_from, resolve_topic, topics_from

# Futures awaited together: enough to keep the producer's batches full, bounded in memory.
_IN_FLIGHT = 5_000


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    produce = sub.add_parser("produce", help="publish a JSONL file to a topic, keyed by symbol")
    produce.add_argument("file", type=Path, help="JSONL file, one message per line")
    produce.add_argument("--topic", required=True, help="topic name or role (e.g. decisions)")
    add_kafka_options(produce)
    produce.set_defaults(handler=run_produce)


def message_key(line: bytes) -> bytes | None:
    """The symbol of a JSON object line; None for a line that is not one (sent unkeyed)."""
    try:
        parsed = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    symbol = parsed.get("symbol") if isinstance(parsed, dict) else None
    return symbol.encode() if isinstance(symbol, str) else None


async def run_produce(args: argparse.Namespace) -> int:
    if not args.file.is_file():
        raise UsageError(f"{args.file}: no such file")
    topic = resolve_topic(topics_from(args), args.topic)
    kafka = kafka_from(args)
    await kafka.check_reachable()
    producer = kafka.producer(acks="all", enable_idempotence=True, linger_ms=10)
    await producer.start()
    sent = 0
    try:
        pending = []
        # Local sequential reads are short next to the awaited sends; streaming keeps memory flat.
        with open(args.file, "rb") as handle:  # noqa: ASYNC230
            for raw in handle:
                line = raw.rstrip(b"\r\n")
                if not line:
                    continue
                pending.append(await producer.send(topic, value=line, key=message_key(line)))
                if len(pending) >= _IN_FLIGHT:
                    await asyncio.gather(*pending)
                    sent += len(pending)
                    pending.clear()
        await asyncio.gather(*pending)
        sent += len(pending)
    finally:
        await producer.stop()
    print(f"produced {sent} messages to {topic}")
    return 0
