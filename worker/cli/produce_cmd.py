"""`execworker produce FILE --topic T`: publish a JSONL file, one message per line, keyed by symbol."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable
from pathlib import Path

import orjson

from worker.cli.common import UsageError, add_kafka_options, kafka_from, resolve_topic, topics_from
from worker.codec.contracts import CONTRACTS
from worker.codec.errors import DecodeError
from worker.codec.json_codec import decode_json
from worker.io.topics import TopicsFile, WireFormat, codec_for

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


def _encoder_for(topics: TopicsFile, topic: str, schemas_dir: Path) -> Callable[[bytes], bytes]:
    """JSON topics get the lines as they are; Avro topics get each line validated and encoded."""
    spec = next((s for s in topics.topics.values() if s.name == topic), None)
    if spec is None or spec.format is WireFormat.JSON:
        return lambda line: line
    codec = codec_for(spec, schemas_dir)
    model = CONTRACTS[spec.value_schema]
    return lambda line: codec.encode(decode_json(model, line))


async def run_produce(args: argparse.Namespace) -> int:
    if not args.file.is_file():
        raise UsageError(f"{args.file}: no such file")
    topics = topics_from(args)
    topic = resolve_topic(topics, args.topic)
    encode = _encoder_for(topics, topic, args.schemas_dir)
    kafka = kafka_from(args)
    await kafka.check_reachable()
    producer = kafka.producer(acks="all", enable_idempotence=True, linger_ms=10)
    await producer.start()
    sent = 0
    try:
        pending = []
        # Local sequential reads are short next to the awaited sends; streaming keeps memory flat.
        with open(args.file, "rb") as handle:  # noqa: ASYNC230
            for number, raw in enumerate(handle, start=1):
                line = raw.rstrip(b"\r\n")
                if not line:
                    continue
                try:
                    value = encode(line)
                except DecodeError as exc:
                    raise UsageError(f"{args.file}:{number}: cannot encode for {topic}: {exc.reason}") from None
                pending.append(await producer.send(topic, value=value, key=message_key(line)))
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
