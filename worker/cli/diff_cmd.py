"""`execworker diff --live SOURCE --replay SOURCE`: per order, what the venue did against what the
backtest would have done, each difference attributed to one cause (worker/reporting/diff.py);
`--fit` calibrates the backtest's fill and latency models from the live fills
(worker/reporting/fit.py). Docs: docs/diff.md."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from worker.cli.common import UsageError, add_kafka_options, kafka_from, resolve_topic, topics_from
from worker.cli.report_inputs import load_decisions_and_market
from worker.contract.events import ExecEvent
from worker.contract.messages import Decision, MarketSnapshot
from worker.core.market import MarketView
from worker.reporting.diff import (
    CAUSES,
    DiffConfig,
    DiffRow,
    diff_orders,
    outcomes,
    summarize,
    text_summary,
    text_table,
    to_csv,
    to_json,
)
from worker.reporting.fit import fit, fit_lines
from worker.reporting.sources import read_outbox, run_metadata

TOPIC_PREFIX = "topic:"
SOURCE_HELP = "an outbox directory (a live worker's --outbox or a replay's --out), or topic:NAME[@P:FIRST-LAST,...]"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("diff", help="live vs replay per order, differences attributed; --fit calibrates")
    parser.add_argument("--live", required=True, help=f"what the venue did: {SOURCE_HELP}")
    parser.add_argument("--replay", required=True, help=f"what the backtest did: {SOURCE_HELP}")
    add_diff_options(parser)
    parser.add_argument("--json", nargs="?", const="-", metavar="FILE", help="rows and summary as JSON (- = stdout)")
    parser.add_argument("--csv", nargs="?", const="-", metavar="FILE", help="one row per order as CSV (- = stdout)")
    parser.add_argument("--html", type=Path, metavar="FILE", help="a self-contained page with the diff section")
    parser.add_argument("--all", action="store_true", help="text table: every order, not only those that differ")
    parser.add_argument("--rows", type=int, default=40, help="text table: at most this many rows (default 40)")
    parser.add_argument(
        "--cause",
        action="append",
        choices=CAUSES,
        default=[],
        help="text table: only orders of this cause (repeatable)",
    )
    parser.add_argument("--fit", action="store_true", help="fit the fill and latency models to the live fills")
    parser.add_argument(
        "--fit-model", default="fixed_bps", help="with --fit: fixed_bps (default) or sqrt_impact:ADV (ADV fixed)"
    )
    parser.add_argument("--fit-min-orders", type=int, default=20, help="with --fit: fills a regime needs (default 20)")
    add_kafka_options(parser)
    parser.set_defaults(handler=run_diff)


def add_diff_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--decisions", type=Path, help="decisions file: the regime of each order (default: the replay's)"
    )
    parser.add_argument(
        "--market",
        type=Path,
        help="market.v1 JSONL: attributes price differences to latency; --fit's reference (default: the replay's)",
    )
    parser.add_argument("--price-tolerance-bps", default="0", help="fill prices this close are the same (default 0)")
    parser.add_argument(
        "--latency-tolerance-ms", type=int, default=50, help="latencies this close are the same (default 50)"
    )


def _parse_source(spec: str) -> tuple[str, str, list[str]]:
    """("outbox", DIR, []) or ("topic", NAME, ["P:FIRST-LAST", ...])."""
    if spec.startswith(TOPIC_PREFIX):
        name, _, ranges = spec[len(TOPIC_PREFIX) :].partition("@")
        if not name:
            raise UsageError(f"{spec}: topic:NAME[@P:FIRST-LAST,...]")
        return "topic", name, [r for r in ranges.split(",") if r]
    return "outbox", spec, []


async def read_source(args: argparse.Namespace, flag: str, spec: str) -> tuple[list[ExecEvent], str, Path | None]:
    """The exec-events of a source, a label for it, and its outbox root (None for a topic)."""
    kind, name, ranges = _parse_source(spec)
    if kind == "outbox":
        return _read_outbox_source(flag, Path(name))
    from worker.cli.replay_cmd import parse_ranges
    from worker.io.kafka import read_committed_topic
    from worker.io.topics import codec_for

    kafka = kafka_from(args)
    await kafka.check_reachable()
    topics = topics_from(args)
    topic = resolve_topic(topics, name)
    topic_spec = next((s for s in topics.topics.values() if s.name == topic), topics.role("exec_events"))
    codec = codec_for(topic_spec, args.schemas_dir)
    records = await read_committed_topic(kafka, topic, parse_ranges(ranges))
    label = f"topic {topic}" + (f" @{','.join(ranges)}" if ranges else "")
    return [codec.decode(ExecEvent, record.value) for record in records], label, None


def _read_outbox_source(flag: str, root: Path) -> tuple[list[ExecEvent], str, Path | None]:
    if not root.is_dir():
        raise UsageError(f"{flag} {root}: no such outbox directory (or write topic:NAME)")
    events = read_outbox(root)
    if not events:
        raise UsageError(f"{flag} {root}: no exec-events in ready/exec_events/ there")
    return events, f"outbox {root}", root


class DiffInputs:
    """Decisions and market data: given, else what the replay recorded in its run.json."""

    def __init__(
        self,
        decisions_path: Path | None,
        market_path: Path | None,
        config: DiffConfig,
        replay_root: Path | None = None,
    ) -> None:
        recorded: dict[str, Any] = run_metadata(replay_root).get("inputs", {}) if replay_root else {}
        self.metadata: dict[str, Any] = {}
        self.decisions: dict[str, Decision] = {}
        self.market: list[MarketSnapshot] = []
        self.config = config
        decisions_path = decisions_path or _recorded(recorded, "decisions")
        market_path = market_path or _recorded(recorded, "market")
        self.decisions, self.market = load_decisions_and_market(decisions_path, market_path, self.metadata)


def diff_config(price_tolerance_bps: str, latency_tolerance_ms: int) -> DiffConfig:
    try:
        tolerance = Decimal(price_tolerance_bps)
    except InvalidOperation:
        raise UsageError(f"--price-tolerance-bps {price_tolerance_bps}: not a number") from None
    if not tolerance.is_finite() or tolerance < 0 or latency_tolerance_ms < 0:
        raise UsageError("--price-tolerance-bps and --latency-tolerance-ms: use 0 or more")
    return DiffConfig(tolerance, latency_tolerance_ms)


def _recorded(inputs: dict[str, Any], key: str) -> Path | None:
    value = inputs.get(key)
    return Path(value) if isinstance(value, str) and Path(value).is_file() else None


def build_diff(
    live: Sequence[ExecEvent], replay: Sequence[ExecEvent], inputs: DiffInputs
) -> tuple[list[DiffRow], dict[str, Any]]:
    rows = diff_orders(live, replay, inputs.market, inputs.decisions, inputs.config)
    return rows, summarize(rows)


def _write(target: str, text: str) -> None:
    if target == "-":
        sys.stdout.write(text)
        return
    path = Path(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    print(f"wrote {path}", file=sys.stderr)


async def run_diff(args: argparse.Namespace) -> int:
    if args.rows < 0 or args.fit_min_orders < 1:
        raise UsageError("--rows: 0 or more; --fit-min-orders: 1 or more")
    live, live_label, _ = await read_source(args, "--live", args.live)
    replay, replay_label, replay_root = await read_source(args, "--replay", args.replay)
    config = diff_config(args.price_tolerance_bps, args.latency_tolerance_ms)
    inputs = DiffInputs(args.decisions, args.market, config, replay_root)
    rows, summary = build_diff(live, replay, inputs)
    summary = {"live": live_label, "replay": replay_label, **inputs.metadata, **summary}
    machine_stdout = "-" in (args.json, args.csv)
    if args.json:
        _write(args.json, json.dumps(to_json(rows, summary), indent=2) + "\n")
    if args.csv:
        _write(args.csv, to_csv(rows))
    if args.html:
        from worker.reporting.diff_html import render_diff_page

        args.html.parent.mkdir(parents=True, exist_ok=True)
        args.html.write_text(render_diff_page(rows, summary), encoding="utf-8")
        print(f"wrote {args.html}", file=sys.stderr)
    out = sys.stderr if machine_stdout else sys.stdout
    if not machine_stdout:
        shown = [row for row in rows if (row.cause in args.cause if args.cause else args.all or row.cause != "match")]
        for line in text_table(shown[: args.rows]):
            print(line, file=out)
        if len(shown) > args.rows:
            print(f"... {len(shown) - args.rows} more (--rows N, --csv, --json)", file=out)
    print(f"live: {live_label}   replay: {replay_label}", file=out)
    for line in text_summary(summary):
        print(line, file=out)
    if args.fit:
        _print_fit(args, live, inputs, out)
    return 0


def _print_fit(args: argparse.Namespace, live: Sequence[ExecEvent], inputs: DiffInputs, out: Any) -> None:
    name, _, adv_text = args.fit_model.partition(":")
    try:
        adv = Decimal(adv_text) if adv_text else None
    except InvalidOperation:
        raise UsageError(f"--fit-model {args.fit_model}: ADV is not a number") from None
    market = MarketView.from_snapshots(inputs.market) if inputs.market else None
    try:
        result = fit(outcomes(live), inputs.decisions, market, name, adv, args.fit_min_orders)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if not inputs.decisions:
        print("note: no decisions file, so no regimes: only * is fitted (--decisions FILE)", file=out)
    for line in fit_lines(result):
        print(line, file=out)
