"""A self-contained HTML page for a report: tables and inline SVG histograms, no scripts, no
external files, so it can be mailed or archived as one file."""

from __future__ import annotations

import html
from typing import Any

from worker.reporting.summary import Report

_BINS = 30


def histogram_svg(values: list[float], title: str, unit: str, width: int = 560, height: int = 180) -> str:
    if not values:
        return f"<p>{html.escape(title)}: no data</p>"
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    counts = [0] * _BINS
    for value in values:
        counts[min(_BINS - 1, int((value - low) / span * _BINS))] += 1
    peak = max(counts)
    bar = (width - 40) / _BINS
    bars = []
    for index, count in enumerate(counts):
        h = (height - 40) * count / peak
        x = 30 + index * bar
        bars.append(
            f'<rect x="{x:.1f}" y="{height - 20 - h:.1f}" width="{bar - 1:.1f}" height="{h:.1f}" fill="#3b6ea5">'
            f"<title>{count}</title></rect>"
        )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
        f'aria-label="{html.escape(title)}">'
        f'<text x="30" y="14" font-size="12">{html.escape(title)} ({len(values)} values)</text>'
        + "".join(bars)
        + f'<text x="30" y="{height - 4}" font-size="10">{low:.2f} {html.escape(unit)}</text>'
        + f'<text x="{width - 10}" y="{height - 4}" font-size="10" text-anchor="end">'
        + f"{high:.2f} {html.escape(unit)}</text></svg>"
    )


def _table(rows: dict[str, Any], headers: tuple[str, str]) -> str:
    body = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(str(v))}</td></tr>" for k, v in rows.items())
    return f"<table><tr><th>{headers[0]}</th><th>{headers[1]}</th></tr>{body}</table>"


def render_html(report: Report, title: str) -> str:
    data = report.to_json()
    fills = {symbol: f"{v['count']} fills, notional {v['notional']}" for symbol, v in data["fills"].items()}
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title>"
        "<style>body{font-family:sans-serif;margin:2em;max-width:60em}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.2em .6em;text-align:left}"
        "</style></head><body>"
        f"<h1>{html.escape(title)}</h1>"
        f"<p>{data['events']} exec-events, {data['orders']} orders with a final state.</p>"
        "<h2>Outcomes</h2>"
        + _table(data["by_status"], ("status", "orders"))
        + "<h2>Deny, throttle and reject reasons</h2>"
        + _table(data["by_reason"], ("status:reason", "orders"))
        + "<h2>Fills</h2>"
        + _table(fills, ("symbol", "fills"))
        + "<h2>Slippage (bps, positive = adverse)</h2>"
        + _table(data["slippage_bps"], ("statistic", "bps"))
        + histogram_svg([float(v) for v in report.slippage_bps], "slippage", "bps")
        + "<h2>Acknowledgement latency (ms)</h2>"
        + _table(data["latency_ms"], ("statistic", "ms"))
        + histogram_svg([float(v) for v in report.latency_ms], "latency", "ms")
        + "</body></html>\n"
    )
