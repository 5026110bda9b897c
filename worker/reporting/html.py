"""The TCA report as one self-contained HTML page: tables, and Plotly figures with plotly.js
inlined (no network access, no external file), so it can be mailed or archived as one file.

Figures are drawn from the report's Decimal numbers converted to float only here, for drawing.
Element ids are fixed, so the same report gives the same page byte for byte.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from worker.reporting.tca import MARKOUT_HORIZONS_S, Tca, fees_by_symbol, group_stats, headline, jsonable

_STYLE = (
    "body{font-family:system-ui,sans-serif;margin:2em auto;max-width:96em;color:#222}"
    "table{border-collapse:collapse;margin:.6em 0 1.4em;display:block;overflow-x:auto;max-width:100%}"
    "td,th{border:1px solid #ccc;padding:.2em .5em;font-size:.9em;"
    "text-align:right}td:first-child,th:first-child{text-align:left}th{background:#f3f3f3}"
    ".note{color:#555;font-size:.9em;max-width:60em}.fig{margin:1em 0 2em}"
)
_CONFIG = {"displaylogo": False, "responsive": True}


def _time(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _f(value: Decimal | int | None) -> float | None:
    return None if value is None else float(value)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    return html.escape(str(jsonable(value)))


def table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], first: str | None = None) -> str:
    if not rows:
        return "<p class='note'>none</p>"
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{_cell(row.get(c))}</td>" for c in columns) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _figure(fig: go.Figure, div_id: str, title: str) -> str:
    fig.update_layout(title=title, template="plotly_white", height=360, margin={"l": 60, "r": 20, "t": 50, "b": 50})
    div: str = fig.to_html(include_plotlyjs=False, full_html=False, div_id=div_id, config=_CONFIG)
    return "<div class='fig'>" + div + "</div>"


def _no_data(title: str, why: str) -> str:
    return f"<p class='note'><b>{html.escape(title)}</b>: {html.escape(why)}</p>"


def figures(tca: Tca) -> list[str]:
    out: list[str] = []
    filled = [r for r in tca.rows if r.qty_filled > 0]
    # 1. Implementation shortfall against the arrival mid.
    if tca.has_market and any(r.shortfall_bps is not None for r in filled):
        fig = go.Figure()
        for side in ("BUY", "SELL"):
            values = [_f(r.shortfall_bps) for r in filled if r.side == side and r.shortfall_bps is not None]
            fig.add_trace(go.Histogram(x=values, name=side, opacity=0.7, nbinsx=40))
        fig.update_layout(barmode="overlay", xaxis_title="bps vs arrival mid (positive = cost)", yaxis_title="orders")
        out.append(_figure(fig, "fig-shortfall", "Implementation shortfall vs arrival mid"))
    else:
        out.append(_no_data("Implementation shortfall", "needs --market (the mid at each decision's time)"))
    # 2. Markouts.
    if tca.has_market:
        fig = go.Figure()
        horizons = [f"+{h}s" for h in MARKOUT_HORIZONS_S]
        for symbol, stats in group_stats(tca.rows, "symbol").items():
            means = [_f(stats[f"markout_{h}s_bps"]["mean"]) for h in MARKOUT_HORIZONS_S]
            fig.add_trace(go.Scatter(x=horizons, y=means, mode="lines+markers", name=symbol))
        fig.update_layout(
            xaxis_title="after the fill", yaxis_title="mean markout, bps (positive = market moved our way)"
        )
        out.append(_figure(fig, "fig-markouts", "Markouts after fills, by symbol"))
    # 3. Fill rate by regime and scenario.
    fig = go.Figure()
    for key in ("regime", "scenario"):
        stats = group_stats(tca.rows, key)
        fig.add_trace(
            go.Bar(x=[f"{key}: {k}" for k in stats], y=[_f(v["fill_rate"]) for v in stats.values()], name=key)
        )
    fig.update_layout(yaxis_title="filled / sent orders", yaxis_range=[0, 1])
    out.append(_figure(fig, "fig-fill-rate", "Fill rate by regime and scenario"))
    # 4. Time to fill.
    times = [r.time_to_fill_ms for r in filled if r.time_to_fill_ms is not None]
    fig = go.Figure(go.Histogram(x=times, nbinsx=50))
    fig.update_layout(xaxis_title="ms from decision to (last) fill", yaxis_title="orders", yaxis_type="log")
    out.append(_figure(fig, "fig-time-to-fill", "Time to fill"))
    # 5-6. Positions and PnL over time.
    if tca.pnl:
        pnl, position = go.Figure(), go.Figure()
        for symbol, points in tca.pnl.items():
            x = [_time(p.ts_ms) for p in points]
            pnl.add_trace(go.Scatter(x=x, y=[_f(p.pnl) for p in points], mode="lines", name=symbol))
            position.add_trace(
                go.Scatter(x=x, y=[_f(p.value) for p in points], mode="lines", name=symbol, line_shape="hv")
            )
        pnl.update_layout(yaxis_title="realized + unrealized - fees (quote)")
        position.update_layout(yaxis_title="position x mid (quote units)")
        out.append(_figure(pnl, "fig-pnl", "PnL per symbol over time"))
        out.append(_figure(position, "fig-position", "Position value per symbol over time"))
    # 7. Denies and throttles over time.
    if tca.gates_over_time:
        fig = go.Figure()
        minutes = list(tca.gates_over_time)
        kinds = sorted({k for counts in tca.gates_over_time.values() for k in counts})
        for kind in kinds:
            fig.add_trace(
                go.Bar(x=[_time(int(m)) for m in minutes], y=[tca.gates_over_time[m][kind] for m in minutes], name=kind)
            )
        fig.update_layout(barmode="stack", yaxis_title="orders per minute")
        out.append(_figure(fig, "fig-gates", "Denies and throttles over time"))
    # 8. Latency.
    latency = [r.latency_ms for r in tca.rows if r.latency_ms is not None]
    fig = go.Figure(go.Histogram(x=latency, nbinsx=40))
    fig.update_layout(xaxis_title="ms (ack - sent)", yaxis_title="orders")
    out.append(_figure(fig, "fig-latency", "Acknowledgement latency"))
    return out


_GROUP_COLUMNS = (
    "name",
    "orders",
    "sent",
    "filled",
    "open",
    "fill_rate",
    "qty_fill_rate",
    "time_to_fill_ms_p50",
    "time_to_fill_ms_p95",
    "shortfall_mean",
    "shortfall_p95",
    "markout_1s_mean",
    "markout_10s_mean",
    "markout_60s_mean",
)


def _group_rows(tca: Tca, key: str) -> list[dict[str, Any]]:
    rows = []
    for name, stats in group_stats(tca.rows, key).items():
        rows.append(
            {
                "name": name,
                **{k: stats[k] for k in _GROUP_COLUMNS[1:9]},
                "shortfall_mean": stats["shortfall_bps"]["mean"],
                "shortfall_p95": stats["shortfall_bps"]["p95"],
                **{f"markout_{h}s_mean": stats[f"markout_{h}s_bps"]["mean"] for h in MARKOUT_HORIZONS_S},
            }
        )
    return rows


def render_html(tca: Tca, title: str, metadata: Mapping[str, Any], sections: Sequence[str] = ()) -> str:
    """`sections`: more HTML at the end of the page (e.g. the live-vs-replay diff)."""
    head = headline(tca.rows)
    statuses: dict[str, int] = {}
    reasons: dict[str, int] = {}
    for row in tca.rows:
        statuses[row.status] = statuses.get(row.status, 0) + 1
        if row.reason:
            key = f"{row.status}:{row.reason}"
            reasons[key] = reasons.get(key, 0) + 1
    positions = [
        {"symbol": s, **{k: getattr(p[-1], k) for k in ("position", "avg_cost", "realized", "unrealized", "fees")}}
        | {"pnl": p[-1].pnl}
        for s, p in tca.pnl.items()
        if p
    ]
    fees = [{"symbol": s, **v} for s, v in fees_by_symbol(tca).items()]
    meta_rows = [{"key": k, "value": v} for k, v in metadata.items()]
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style>",
        f"<script type='text/javascript'>{get_plotlyjs()}</script></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p><b>{head['orders']} orders</b> from {tca.events} exec-events: {head['final']} with a final state, "
        f"<b>{head['open']} still open</b> (resting or in flight).</p>",
        "<h2>Run</h2>",
        table(meta_rows, ("key", "value")),
        "<h2>Outcomes</h2>",
        table([{"status": k, "orders": v} for k, v in sorted(statuses.items())], ("status", "orders")),
        "<h2>Execution quality by symbol</h2>",
        "<p class='note'>Shortfall: fill price vs the mid at the decision's event time, bps, positive = cost. "
        "Markouts: mid H seconds after the fill vs the fill price, bps, positive = the market moved our way. "
        "Fill rate: orders with a fill / orders sent (denied and throttled orders are never sent). "
        "Times in ms of event time. Definitions: worker/reporting/tca.py.</p>",
        table(_group_rows(tca, "symbol"), _GROUP_COLUMNS),
        "<h2>By regime</h2>",
        table(_group_rows(tca, "regime"), _GROUP_COLUMNS),
        "<h2>By scenario</h2>",
        table(_group_rows(tca, "scenario"), _GROUP_COLUMNS),
        *figures(tca),
        "<h2>Positions and PnL (end of run)</h2>",
        table(positions, ("symbol", "position", "avg_cost", "realized", "unrealized", "fees", "pnl")),
        f"<h2>Fees (maker {tca.fees.maker_bps} bps, taker {tca.fees.taker_bps} bps)</h2>",
        table(fees, ("symbol", "maker", "taker")),
        "<h2>Deny, throttle and reject reasons</h2>",
        table([{"status:reason": k, "orders": v} for k, v in sorted(reasons.items())], ("status:reason", "orders")),
        *sections,
        "</body></html>\n",
    ]
    return "".join(parts)
