"""`execworker dlq list|redrive`: inspect dead letters, and re-publish them once the cause is fixed.

Redrive sends each selected record's original key, value and headers back to its source topic
(or `--to-topic`). It is safe to repeat: a redriven decision that was already executed is
recognised by its client order id and creates no second order. `--dry-run` shows what would go.
"""

from __future__ import annotations

import argparse
import base64
from collections import Counter

from worker.cli.common import add_kafka_options, kafka_from, resolve_topic, topics_from
from worker.contract.events import DlqRecord
from worker.io.kafka import read_committed_topic
from worker.io.topics import codec_for


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    dlq = sub.add_parser("dlq", help="inspect and redrive dead-lettered messages")
    verbs = dlq.add_subparsers(dest="dlq_verb", required=True)
    for verb, text in (("list", "summarise DLQ records"), ("redrive", "re-publish selected records")):
        parser = verbs.add_parser(verb, help=text)
        add_kafka_options(parser)
        parser.add_argument("--error-class", help="only records of this class (json, schema, symbol, ...)")
        parser.add_argument("--source-topic", help="only records read from this topic")
        parser.add_argument("--reason-contains", help="only records whose reason contains this text")
        parser.add_argument("--from-offset", type=int, help="only source offsets >= this")
        parser.add_argument("--to-offset", type=int, help="only source offsets <= this")
        parser.set_defaults(handler=run_list if verb == "list" else run_redrive)
    redrive = verbs.choices["redrive"]
    redrive.add_argument("--to-topic", help="publish here instead of each record's source topic")
    redrive.add_argument("--dry-run", action="store_true", help="print what would be sent, send nothing")


def selected(args: argparse.Namespace, record: DlqRecord) -> bool:
    source = record.source
    return (
        (args.error_class is None or record.error_class == args.error_class)
        and (args.source_topic is None or source.topic == args.source_topic)
        and (args.reason_contains is None or args.reason_contains in record.reason)
        and (args.from_offset is None or source.offset >= args.from_offset)
        and (args.to_offset is None or source.offset <= args.to_offset)
    )


async def _records(args: argparse.Namespace) -> list[DlqRecord]:
    topics = topics_from(args)
    codec = codec_for(topics.role("dlq"), args.schemas_dir)
    raw = await read_committed_topic(kafka_from(args), resolve_topic(topics, "dlq"))
    records = [codec.decode(DlqRecord, r.value) for r in raw]
    return [r for r in records if selected(args, r)]


async def run_list(args: argparse.Namespace) -> int:
    await kafka_from(args).check_reachable()
    records = await _records(args)
    by_class = Counter((r.error_class, r.source.topic) for r in records)
    print(f"{len(records)} DLQ records match")
    for (error_class, topic), count in sorted(by_class.items()):
        print(f"  {count:>7}  {error_class:<16} from {topic}")
    for record in records[:20]:
        print(f"  {record.source.topic}[{record.source.partition}]@{record.source.offset}: {record.reason}")
    return 0


async def run_redrive(args: argparse.Namespace) -> int:
    kafka = kafka_from(args)
    await kafka.check_reachable()
    records = await _records(args)
    if args.dry_run:
        for record in records:
            target = args.to_topic or record.source.topic
            print(f"would send {record.source.topic}@{record.source.offset} -> {target}: {record.reason}")
        print(f"{len(records)} records selected (dry run: nothing sent)")
        return 0
    producer = kafka.producer(acks="all", enable_idempotence=True)
    await producer.start()
    try:
        for record in records:
            await producer.send_and_wait(
                args.to_topic or record.source.topic,
                value=base64.b64decode(record.value_b64) if record.value_b64 is not None else None,
                key=base64.b64decode(record.key_b64) if record.key_b64 is not None else None,
                headers=[
                    (h.name, base64.b64decode(h.value_b64) if h.value_b64 is not None else b"") for h in record.headers
                ],
            )
    finally:
        await producer.stop()
    print(f"redrove {len(records)} records")
    return 0
