"""`execworker explain CLIENT_ORDER_ID`: one order's causal chain, from the topics or an outbox."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import orjson
from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from worker.cli.common import UsageError, add_kafka_options, kafka_from, resolve_topic, topics_from
from worker.codec.errors import DecodeError
from worker.codec.json_codec import decode_json
from worker.contract.events import ExecEvent
from worker.contract.messages import Decision, Signal
from worker.io.kafka import BrokerUnreachable, KafkaConfig, read_committed_topic
from worker.io.outbox import Outbox
from worker.io.topics import TopicsFile, codec_for
from worker.reporting.explain import explain, render


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    cmd = sub.add_parser("explain", help="the causal chain of one order (input, gates, venue, events)")
    cmd.add_argument("client_order_id", help="the order's client order id")
    cmd.add_argument("--outbox", type=Path, help="read exec-events from this outbox instead of the topic")
    cmd.add_argument("--json", action="store_true", help="machine-readable JSON instead of text")
    add_kafka_options(cmd)
    cmd.set_defaults(handler=run_explain)


async def run_explain(args: argparse.Namespace) -> int:
    topics = topics_from(args)
    kafka = kafka_from(args)
    coid: str = args.client_order_id
    needle = coid.encode()
    if args.outbox is not None:
        if not (args.outbox / "ready").is_dir():
            raise UsageError(f"--outbox {args.outbox}: no ready/ directory (not an outbox?)")
        events = [decode_json(ExecEvent, line) for line in Outbox(args.outbox).iter_lines() if needle in line]
    else:
        await kafka.check_reachable()
        codec = codec_for(topics.role("exec_events"), args.schemas_dir)
        records = await read_committed_topic(kafka, resolve_topic(topics, "exec_events"))
        decoded = (codec.decode(ExecEvent, r.value) for r in records)
        events = [e for e in decoded if e.client_order_id == coid]
    events = [e for e in events if e.client_order_id == coid]
    command: dict[str, Any] | None = None
    note: str | None = None
    if events:
        command, note = await read_input(kafka, topics, args.schemas_dir, events[0])
    chain = explain(coid, events, command, note)
    if args.json:
        sys.stdout.buffer.write(orjson.dumps(chain, option=orjson.OPT_INDENT_2) + b"\n")
    else:
        print(render(chain))
    return 0 if chain["found"] else 1


async def read_input(
    kafka: KafkaConfig, topics: TopicsFile, schemas_dir: Path, event: ExecEvent
) -> tuple[dict[str, Any] | None, str | None]:
    """The input message an event points at, decoded; or None and why not."""
    source = event.source
    spec = next((s for s in topics.topics.values() if s.name == source.topic), None)
    if spec is None:
        return None, f"topic {source.topic} is not in the topics file"
    try:
        await kafka.check_reachable()
    except BrokerUnreachable as exc:
        return None, str(exc)
    consumer = kafka.consumer(group_id=None, isolation_level="read_committed", enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(source.topic, source.partition)
        consumer.assign([tp])
        consumer.seek(tp, source.offset)
        batch = await consumer.getmany(tp, timeout_ms=5_000, max_records=1)
        record = next((r for r in batch.get(tp, []) if r.offset == source.offset), None)
        if record is None:
            return None, f"offset {source.offset} is no longer in {source.topic}[{source.partition}] (retention?)"
        codec = codec_for(spec, schemas_dir)
        model = Signal if spec.name == topics.role("signals").name else Decision
        return codec.decode(model, record.value).model_dump(mode="json"), None
    except DecodeError as exc:
        return None, f"the input no longer decodes: {exc}"
    except KafkaError as exc:
        return None, f"cannot read the input: {exc}"
    finally:
        await consumer.stop()
