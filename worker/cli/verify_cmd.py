"""`execworker verify`: prove a run's outcome from the committed topic and the outbox.

Checks that every decision of a JSONL file has exactly one terminal exec-event, that no client
order id has more than one, and that the outbox `ready/` files hold exactly the committed events
(the same lines, none missing, none twice, no `.part` left behind).
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

import orjson

from worker.cli.common import UsageError, add_kafka_options, kafka_from, resolve_topic, topics_from
from worker.codec.json_codec import encode_json
from worker.codec.wire import JsonWire
from worker.contract.enums import OrderStatus
from worker.contract.events import ExecEvent
from worker.contract.state_machine import is_terminal
from worker.io.kafka import read_committed_topic
from worker.io.outbox import Outbox
from worker.io.topics import codec_for


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    verify = sub.add_parser("verify", help="check exec-events and outbox against a decisions file")
    verify.add_argument("--decisions", type=Path, required=True, help="the JSONL decisions produced")
    verify.add_argument("--outbox", type=Path, default=Path("var/outbox"), help="outbox root")
    add_kafka_options(verify)
    verify.set_defaults(handler=run_verify)


async def run_verify(args: argparse.Namespace) -> int:
    if not args.decisions.is_file():
        raise UsageError(f"{args.decisions}: no such file")
    expected = Counter(
        orjson.loads(line)["signal_row_id"] for line in args.decisions.read_bytes().splitlines() if line.strip()
    )
    kafka = kafka_from(args)
    await kafka.check_reachable()
    topics = topics_from(args)
    codec = codec_for(topics.role("exec_events"), args.schemas_dir)
    raw = await read_committed_topic(kafka, resolve_topic(topics, "exec_events"))
    # The outbox is JSONL whatever the topic's format: compare in the outbox's terms.
    committed = [
        record.value if isinstance(codec, JsonWire) else encode_json(codec.decode(ExecEvent, record.value))
        for record in raw
    ]

    terminal_by_row: Counter[str] = Counter()
    terminal_by_order: Counter[str] = Counter()
    for value in committed:
        event = orjson.loads(value)
        if is_terminal(OrderStatus(event["status"])):
            terminal_by_row[event["signal_row_id"]] += 1
            terminal_by_order[event["client_order_id"]] += 1

    missing = [row for row in expected if terminal_by_row[row] == 0]
    doubled_rows = [row for row in expected if terminal_by_row[row] > expected[row]]
    doubled_orders = [order for order, count in terminal_by_order.items() if count > 1]
    outbox = Outbox(args.outbox)
    outbox_lines = Counter(outbox.iter_lines())
    topic_lines = Counter(committed)
    only_topic = sum((topic_lines - outbox_lines).values())
    only_outbox = sum((outbox_lines - topic_lines).values())
    parts = outbox.leftover_parts()
    # Lines of minutes not yet published (a worker still running, or killed before its drain).
    still_open = sum(len(path.read_bytes().splitlines()) for path in outbox.open_files())

    checks = [
        (
            not missing,
            f"{len(expected) - len(missing)}/{len(expected)} decisions have a terminal exec-event"
            + (f" (missing e.g. {missing[0]})" if missing else ""),
        ),
        (
            not doubled_rows and not doubled_orders,
            f"no decision or client_order_id has two terminal events ({len(doubled_orders)} doubled)",
        ),
        (
            only_topic == 0 and only_outbox == 0,
            f"outbox ready/ holds exactly the {len(committed)} committed events "
            f"({only_topic} missing, {only_outbox} extra)"
            + (f"; {still_open} lines wait in open minutes (docs/outbox.md)" if still_open else ""),
        ),
        (not parts, f"no .part file left in the spool ({len(parts)} found)"),
    ]
    for ok, text in checks:
        print(f"  {'PASS' if ok else 'FAIL'}  {text}")
    return 0 if all(ok for ok, _ in checks) else 1
