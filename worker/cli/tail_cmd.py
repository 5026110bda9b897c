"""`execworker tail`: print committed messages of a topic (read_committed), one JSON per line.

kcat-like: `--partition/-p` (repeatable), `--offset/-o beginning|end|stored|N|-N`, `--exit-at-end/-e`,
`--limit N`. With `--group G` it resumes where the last `tail --group G` stopped: offsets are
committed for the group after each batch is written and flushed, so a stopped tail (Ctrl-C,
SIGTERM, `-e`, `--limit`) restarted with the same group neither repeats nor skips a record. A
kill -9 between a write and its commit repeats at most that batch. Avro topics (`format: avro`
in the topics file) are printed decoded, as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Callable

from worker.cli.common import UsageError, add_kafka_options, kafka_from, topics_from
from worker.codec.errors import DecodeError
from worker.codec.wire import AvroWire
from worker.io.tail import OffsetSpec, StartAt, TopicTail, parse_offset
from worker.io.topics import TopicsFile, codec_for


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    tail = sub.add_parser("tail", help="print committed messages of a topic (kcat-like; --group resumes)")
    tail.add_argument("--topic", "-t", default="exec_events", help="topic name or role (default: exec_events)")
    tail.add_argument("--group", "-G", help="consumer group: start at its committed offsets, commit as we go")
    tail.add_argument("--partition", "-p", type=int, action="append", help="only this partition (repeatable)")
    tail.add_argument(
        "--offset",
        "-o",
        help="beginning | end | stored | N | -N (default: stored with --group, else end)",
    )
    tail.add_argument("--from-beginning", action="store_true", help="same as --offset beginning")
    tail.add_argument("--exit-at-end", "-e", action="store_true", help="exit once every partition is read to its end")
    tail.add_argument("--limit", type=int, default=0, help="stop after N messages (0 = no limit)")
    add_kafka_options(tail)
    tail.set_defaults(handler=run_tail)


def offset_from(args: argparse.Namespace) -> OffsetSpec:
    if args.from_beginning and args.offset:
        raise UsageError("--from-beginning and --offset: give one")
    text = "beginning" if args.from_beginning else args.offset or ("stored" if args.group else "end")
    try:
        spec = parse_offset(text)
    except ValueError as exc:
        raise UsageError(f"--offset: {exc}") from None
    if spec.start is StartAt.STORED and not args.group:
        raise UsageError("--offset stored needs --group")
    return spec


def printer_for(topics: TopicsFile, topic: str, args: argparse.Namespace) -> Callable[[bytes], bytes]:
    """Identity for JSON topics; Avro (as declared in the topics file) decoded to JSON."""
    for spec in topics.topics.values():
        if spec.name == topic:
            codec = codec_for(spec, args.schemas_dir)
            if isinstance(codec, AvroWire):
                return codec.to_json
    return lambda value: value


async def run_tail(args: argparse.Namespace) -> int:
    topics = topics_from(args)
    topic = topics.topics[args.topic].name if args.topic in topics.topics else args.topic
    offset = offset_from(args)
    render = printer_for(topics, topic, args)
    kafka = kafka_from(args)
    await kafka.check_reachable()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    out = sys.stdout.buffer
    printed = 0
    try:
        tail = TopicTail(kafka, topic, offset, args.group, args.partition, args.exit_at_end, poll_timeout_ms=200)
        async with tail:
            async for batch in tail.batches(stop):
                if args.limit:
                    batch = batch[: args.limit - printed]
                for record in batch:
                    if record.value is None:
                        continue
                    try:
                        out.write(render(record.value) + b"\n")
                    except DecodeError as exc:
                        print(f"{record.partition}:{record.offset}: {exc.reason}", file=sys.stderr)
                out.flush()
                await tail.commit(batch)  # after the flush: what is committed was printed
                printed += len(batch)
                if args.limit and printed >= args.limit:
                    break
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
    return 0
