"""`execworker report`: fills, reasons, slippage and latency of an outbox (or a replay's --out)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from worker.cli.common import UsageError
from worker.contract.events import ExecEvent
from worker.io.outbox import Outbox
from worker.reporting.html import render_html
from worker.reporting.summary import build_report


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("report", help="report over an outbox: outcomes, reasons, slippage, latency")
    parser.add_argument("--outbox", type=Path, default=Path("var/outbox"), help="outbox root (or a replay --out)")
    parser.add_argument("--json", type=Path, help="write the report as JSON here (default: print it)")
    parser.add_argument("--html", type=Path, help="also write a self-contained HTML page here")
    parser.set_defaults(handler=run_report)


async def run_report(args: argparse.Namespace) -> int:
    outbox = Outbox(args.outbox)
    if not outbox.ready_files():
        raise UsageError(f"--outbox {args.outbox}: no ready/exec_events/*.jsonl files there")
    report = build_report(ExecEvent.model_validate_json(line) for line in outbox.iter_lines())
    text = json.dumps(report.to_json(), indent=2)
    if args.json:
        args.json.write_text(text + "\n", encoding="utf-8")
        print(f"wrote {args.json}")
    else:
        print(text)
    if args.html:
        args.html.write_text(render_html(report, f"execworker report: {args.outbox}"), encoding="utf-8")
        print(f"wrote {args.html}")
    return 0
