"""The diff's HTML (`diff --html`, and the section of `report --diff-against`) rendered by
headless Chromium: no console output, the price-difference figure drawn, a table per cause."""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path

import pytest

from tests.unit.test_diff import event, live
from tests.unit.test_report_page import chromium, render  # noqa: F401 (the fixture)
from worker.reporting.diff import diff_orders, summarize
from worker.reporting.diff_html import render_diff_page


@pytest.mark.timeout(1_200)  # the first use may install Chromium (scripts/ensure-chromium)
def test_the_diff_page_renders_in_chromium_without_console_output(chromium: str, tmp_path: Path) -> None:  # noqa: F811
    live_events = live("ewA", px_fill="100.10") + live("ewB", status="REJECTED", reason="venue:-1013") + live("ewC")
    replay_events = [event("ewA"), event("ewB"), event("ewC", px_fill="100.02"), event("ewD")]
    rows = diff_orders(live_events, replay_events)
    summary = {"live": "outbox live", "replay": "outbox replay", **summarize(rows)}
    page = tmp_path / "diff.html"
    page.write_text(render_diff_page(rows, summary), encoding="utf-8")
    dom, console = render(chromium, page, tmp_path / "profile")
    assert console == []
    assert re.search(r'<div id="fig-diff-px"[^>]*class="[^"]*js-plotly-plot', dom)
    for cause in ("venue_reject", "fill_model", "replay_only"):
        assert f"<td>{cause}</td>" in dom
    assert summary["px_diff_bps"]["mean"] == Decimal("4.00")  # A +10.00 bps, C -2.00 bps
