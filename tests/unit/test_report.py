import re
from pathlib import Path

import orjson

from examples.gen_decisions import decisions
from worker.contract.events import ExecEvent
from worker.core.backtest import BacktestExecutor
from worker.core.engine import ExecutionEngine
from worker.io.outbox import Outbox
from worker.policy.rng import Rng
from worker.reporting.html import render_html
from worker.reporting.summary import build_report
from worker.reporting.tca import build_tca
from worker.runtime.replay import outbox_sink, replay


async def test_report_counts_match_the_events_and_the_page_is_self_contained(tmp_path: Path) -> None:
    values = [orjson.dumps(d) for d in decisions(600, seed=71)]
    outbox = Outbox(tmp_path)
    result = await replay(ExecutionEngine(BacktestExecutor(Rng(1))), values, [outbox_sink(outbox)])
    outbox.drain("replay")
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

    tca = build_tca(events)
    page = render_html(tca, "test", {"seed": 1})
    # Self-contained: plotly.js inlined once, no script or stylesheet loaded from anywhere.
    assert page.count("<script type='text/javascript'>") == 1 and "Plotly.newPlot" in page
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=", page)
    assert "FILLED" in page and f"<b>{len(events)} orders</b>" in page
    # The same report gives the same page.
    assert render_html(build_tca(events), "test", {"seed": 1}) == page
