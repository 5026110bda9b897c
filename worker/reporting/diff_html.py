"""The live-versus-replay diff as an HTML section (in `report --diff-against`) or a page of its
own (`diff --html`): counts per cause, price and latency differences, a histogram of the price
difference per cause, and the orders that differ. Rules: worker/reporting/diff.py."""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from worker.reporting.diff import CAUSES, COLUMNS, STATS, DiffRow
from worker.reporting.html import _STYLE, _figure, table

# The page stays readable: the rest are in --csv / --json.
MAX_ROWS = 500


def diff_section(rows: Sequence[DiffRow], summary: Mapping[str, Any]) -> str:
    causes = [{"cause": c, "orders": summary["by_cause"][c]} for c in CAUSES]
    stats = [{"measure": key, **summary[key], "unit": unit} for key, unit in STATS]
    differing = [row.as_dict() for row in rows if row.cause != "match"]
    fig = go.Figure()
    for cause in CAUSES:
        values = [float(r.px_diff_bps) for r in rows if r.cause == cause and r.px_diff_bps is not None]
        if values:
            fig.add_trace(go.Histogram(x=values, name=cause, opacity=0.7, nbinsx=40))
    fig.update_layout(barmode="overlay", xaxis_title="bps, live vs replay fill (positive = live worse)")
    parts = [
        "<h2 id='diff'>Live versus replay</h2>",
        f"<p class='note'>live: {html.escape(str(summary.get('live', '')))}; replay: "
        f"{html.escape(str(summary.get('replay', '')))}. {summary['orders']} orders, {summary['both_sides']} on "
        "both sides. One cause per order, the first rule that holds in this order: "
        + ", ".join(CAUSES)
        + " (docs/diff.md).</p>",
        table(causes, ("cause", "orders")),
        table(stats, ("measure", "n", "mean", "p50", "p95", "unit")),
        _figure(fig, "fig-diff-px", "Fill price difference by cause") if fig.data else "",
        f"<h3>Orders that differ ({len(differing)}{f', first {MAX_ROWS}' if len(differing) > MAX_ROWS else ''})</h3>",
        table(differing[:MAX_ROWS], COLUMNS),
    ]
    return "".join(parts)


def render_diff_page(rows: Sequence[DiffRow], summary: Mapping[str, Any]) -> str:
    title = "execworker diff: live versus replay"
    return "".join(
        [
            "<!doctype html><html><head><meta charset='utf-8'>",
            f"<title>{title}</title><style>{_STYLE}</style>",
            f"<script type='text/javascript'>{get_plotlyjs()}</script></head><body>",
            f"<h1>{title}</h1>",
            diff_section(rows, summary),
            "</body></html>\n",
        ]
    )
