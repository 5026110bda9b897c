"""`execworker report`: transaction-cost analysis of exec-events from an outbox (a live worker's
or a replay's `--out`) or the exec-events topic, as JSON, a self-contained HTML page, CSV and
Parquet; `--follow` keeps the outputs current while the topic grows. Definitions:
worker/reporting/tca.py; operations: docs/operations.md ("Reports")."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from worker.cli.common import UsageError, add_kafka_options, kafka_from, resolve_topic, topics_from
from worker.cli.progress import progress_bar
from worker.cli.report_inputs import load_decisions_and_market
from worker.codec.errors import DecodeError
from worker.contract.events import ExecEvent
from worker.contract.messages import Decision, MarketSnapshot
from worker.io.kafka import read_committed_topic
from worker.io.tail import OffsetSpec, StartAt, TopicTail
from worker.io.topics import codec_for
from worker.reporting.sources import read_outbox, run_metadata
from worker.reporting.tca import FeeSchedule, build_tca, summary_json


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("report", help="TCA report: shortfall, markouts, fill rates, fees, PnL (HTML/CSV/Parquet)")
    parser.add_argument("--outbox", type=Path, default=Path("var/outbox"), help="outbox root (or a replay's --out)")
    parser.add_argument("--topic", help="read the exec-events topic instead (name or role, read_committed)")
    parser.add_argument("--decisions", type=Path, help="decisions file: regime and instrument grid per order")
    parser.add_argument("--market", type=Path, help="market.v1 JSONL: arrival mids and markouts")
    parser.add_argument("--maker-fee-bps", default="0", help="fee on resting (maker) fills, bps (default 0)")
    parser.add_argument("--taker-fee-bps", default="0", help="fee on immediate (taker) fills, bps (default 0)")
    parser.add_argument("--json", type=Path, help="write the summary as JSON here (default: print it)")
    parser.add_argument("--html", type=Path, help="write a self-contained HTML page (Plotly) here")
    parser.add_argument("--csv", type=Path, metavar="DIR", help="write orders.csv and pnl.csv here")
    parser.add_argument("--parquet", type=Path, metavar="FILE", help="write one row per order as Parquet here")
    parser.add_argument("--title", help="page title")
    parser.add_argument(
        "--diff-against",
        metavar="SOURCE",
        help="with --html: add a live-vs-replay section, this report's events as the live side and SOURCE "
        "(a replay's --out, or topic:NAME[@P:A-B,...]) as the replay (docs/diff.md)",
    )
    parser.add_argument("--follow", action="store_true", help="with --topic: keep the outputs current as it grows")
    parser.add_argument("--every-s", type=float, default=5.0, help="with --follow: rewrite the outputs this often")
    parser.add_argument("--exit-at-end", "-e", action="store_true", help="with --follow: stop at the topic's end")
    add_kafka_options(parser)
    parser.set_defaults(handler=run_report)


def _bps(text: str, flag: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise UsageError(f"{flag} {text}: not a number") from None
    if not value.is_finite() or abs(value) > 1_000:
        raise UsageError(f"{flag} {text}: use a rate in bps between -1000 and 1000")
    return value


class Inputs:
    def __init__(self, args: argparse.Namespace) -> None:
        self.sections: list[str] = []  # more HTML for the page (the diff section)
        self.fees = FeeSchedule(
            _bps(args.maker_fee_bps, "--maker-fee-bps"), _bps(args.taker_fee_bps, "--taker-fee-bps")
        )
        self.run = run_metadata(args.outbox) if not args.topic else {}
        decisions_path = args.decisions
        recorded = self.run.get("inputs", {}).get("decisions")
        if decisions_path is None and isinstance(recorded, str) and Path(recorded).is_file():
            decisions_path = Path(recorded)  # the replay's own input
        market_path = args.market
        recorded_market = self.run.get("inputs", {}).get("market")
        if market_path is None and isinstance(recorded_market, str) and Path(recorded_market).is_file():
            market_path = Path(recorded_market)  # the market data the replay filled from
        self.decisions: dict[str, Decision] = {}
        self.market: list[MarketSnapshot] = []
        self.metadata: dict[str, Any] = {"source": f"topic {args.topic}" if args.topic else f"outbox {args.outbox}"}
        for key, value in sorted(self.run.items()):
            self.metadata[f"run.{key}"] = json.dumps(value, sort_keys=True) if isinstance(value, dict | list) else value
        self.decisions, self.market = load_decisions_and_market(decisions_path, market_path, self.metadata)
        self.metadata["fees_bps"] = f"maker {self.fees.maker_bps}, taker {self.fees.taker_bps}"


def write_outputs(args: argparse.Namespace, inputs: Inputs, events: Sequence[ExecEvent], quiet: bool = False) -> None:
    tca = build_tca(events, inputs.market, inputs.decisions, inputs.fees)
    summary = summary_json(tca, inputs.metadata)
    text = json.dumps(summary, indent=2)
    written: list[Path] = []
    if args.json:
        written.append(_atomic_write(args.json, text + "\n"))
    elif not args.follow:
        print(text)
    if args.html:
        from worker.reporting.html import render_html  # Plotly: imported only when a page is asked for

        title = args.title or f"execworker TCA: {inputs.metadata['source']}"
        written.append(_atomic_write(args.html, render_html(tca, title, inputs.metadata, inputs.sections)))
    if args.csv or args.parquet:
        from worker.reporting.export import write_csv, write_parquet

        if args.csv:
            written.extend(write_csv(args.csv, tca))
        if args.parquet:
            written.append(write_parquet(args.parquet, tca))
    if not quiet:
        for path in written:
            print(f"wrote {path}")


def _atomic_write(path: Path, text: str) -> Path:
    """Readers of a followed report never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(f".{path.name}.part")
    part.write_text(text, encoding="utf-8")
    part.replace(path)
    return path


async def run_report(args: argparse.Namespace) -> int:
    if args.follow and not args.topic:
        raise UsageError("--follow reads a topic: add --topic exec_events")
    inputs = Inputs(args)
    if args.diff_against and (args.follow or not args.html):
        raise UsageError("--diff-against adds a section to the --html page (and does not --follow)")
    if args.follow:
        return await _follow(args, inputs)
    if args.topic:
        events = await _read_topic(args)
    else:
        with progress_bar("reading outbox") as advance:
            events = read_outbox(args.outbox, advance)
        if not events:
            raise UsageError(f"--outbox {args.outbox}: no exec-events in ready/exec_events/ there")
    if args.diff_against:
        inputs.sections.append(await _diff_section(args, events))
    write_outputs(args, inputs, events)
    return 0


async def _diff_section(args: argparse.Namespace, events: Sequence[ExecEvent]) -> str:
    """The live-vs-replay section: this report's events against --diff-against (i14diff)."""
    from worker.cli.diff_cmd import DiffInputs, build_diff, diff_config, read_source
    from worker.reporting.diff_html import diff_section

    replay, label, root = await read_source(args, "--diff-against", args.diff_against)
    inputs = DiffInputs(args.decisions, args.market, diff_config("0", 50), root)
    rows, summary = build_diff(events, replay, inputs)
    live = f"topic {args.topic}" if args.topic else f"outbox {args.outbox}"
    return diff_section(rows, {"live": live, "replay": label, **summary})


async def _read_topic(args: argparse.Namespace) -> list[ExecEvent]:
    kafka = kafka_from(args)
    await kafka.check_reachable()
    topics = topics_from(args)
    topic = resolve_topic(topics, args.topic)
    spec = next((s for s in topics.topics.values() if s.name == topic), topics.role("exec_events"))
    codec = codec_for(spec, args.schemas_dir)
    records = await read_committed_topic(kafka, topic)
    return [codec.decode(ExecEvent, record.value) for record in records]


async def _follow(args: argparse.Namespace, inputs: Inputs) -> int:
    kafka = kafka_from(args)
    await kafka.check_reachable()
    topics = topics_from(args)
    topic = resolve_topic(topics, args.topic)
    spec = next((s for s in topics.topics.values() if s.name == topic), topics.role("exec_events"))
    codec = codec_for(spec, args.schemas_dir)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    events: list[ExecEvent] = []
    last_write, dirty = 0.0, True
    try:
        tail = TopicTail(kafka, topic, OffsetSpec(StartAt.BEGINNING), exit_at_end=args.exit_at_end, poll_timeout_ms=500)
        async with tail:
            async for batch in tail.batches(stop):
                for record in batch:
                    try:
                        events.append(codec.decode(ExecEvent, record.value))
                    except DecodeError as exc:
                        print(f"{record.partition}:{record.offset}: {exc.reason}", file=sys.stderr)
                dirty = True
                if time.monotonic() - last_write >= args.every_s:
                    write_outputs(args, inputs, events, quiet=True)
                    last_write, dirty = time.monotonic(), False
                    print(f"report updated: {len(events)} exec-events", file=sys.stderr)
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
    if dirty or not events:
        write_outputs(args, inputs, events, quiet=True)
    print(f"report final: {len(events)} exec-events", file=sys.stderr)
    return 0
