from pathlib import Path

import orjson

from examples.gen_decisions import decisions
from worker.contract.events import ExecEvent
from worker.execution.backtest import BacktestExecutor
from worker.execution.engine import ExecutionEngine
from worker.io.outbox import Outbox
from worker.policy.rng import Rng
from worker.reporting.html import render_html
from worker.reporting.summary import build_report
from worker.runtime.replay import outbox_sink, replay


async def test_report_counts_match_the_events_and_the_page_is_self_contained(tmp_path: Path) -> None:
    values = [orjson.dumps(d) for d in decisions(600, seed=71)]
    result = await replay(ExecutionEngine(BacktestExecutor(Rng(1))), values, [outbox_sink(Outbox(tmp_path))])
    events = [ExecEvent.model_validate_json(line) for line in Outbox(tmp_path).iter_lines()]
    report = build_report(events).to_json()

    assert report["orders"] == result.events == len(events) == 600
    assert sum(report["by_status"].values()) == 600
    assert report["by_status"] == dict(result.orders)
    filled = [e for e in events if e.status.value == "FILLED"]
    assert report["slippage_bps"]["count"] == len(filled)
    assert report["latency_ms"]["count"] == sum(1 for e in events if e.latency_ms is not None)
    assert sum(v["count"] for v in report["fills"].values()) == len(filled)
    # Quantiles are ordered.
    s = report["slippage_bps"]
    assert float(s["p5"]) <= float(s["p50"]) <= float(s["p95"])

    page = render_html(build_report(events), "test")
    assert (
        page.count("<svg") == 2
        and "<script" not in page
        and "http" not in page.replace("http://www.w3.org/2000/svg", "")
    )
    assert "FILLED" in page
