"""Checks of the ops files shared by unit and broker tests: promtool, and the metric names a
PromQL expression uses (for the Grafana dashboard check)."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
ALERTS = ROOT / "ops" / "prometheus" / "alerts.yml"
ALERTS_TEST = ROOT / "ops" / "prometheus" / "alerts_test.yml"
DASHBOARD = ROOT / "ops" / "grafana" / "execworker.json"

# Metrics Prometheus makes itself (not served by anyone's /metrics).
PROMETHEUS_SYNTHETIC = frozenset({"up", "scrape_duration_seconds", "scrape_samples_scraped"})

_KEYWORDS = frozenset(
    [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "le",
        "inf",
        "nan",
    ]
)
_FUNCTIONS = frozenset(
    [
        "abs",
        "absent",
        "absent_over_time",
        "avg",
        "avg_over_time",
        "bottomk",
        "ceil",
        "changes",
        "clamp",
        "clamp_max",
        "clamp_min",
        "count",
        "count_over_time",
        "count_values",
        "delta",
        "deriv",
        "exp",
        "floor",
        "histogram_quantile",
        "holt_winters",
        "idelta",
        "increase",
        "irate",
        "label_join",
        "label_replace",
        "last_over_time",
        "ln",
        "log2",
        "log10",
        "max",
        "max_over_time",
        "min",
        "min_over_time",
        "predict_linear",
        "quantile",
        "quantile_over_time",
        "rate",
        "resets",
        "round",
        "scalar",
        "sort",
        "sort_desc",
        "sqrt",
        "stddev",
        "stdvar",
        "sum",
        "sum_over_time",
        "time",
        "timestamp",
        "topk",
        "vector",
        "group",
    ]
)


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects (label matchers, grouping labels, durations,
    strings, numbers and function names removed)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # range durations
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        word = match.group(0)
        if word in _KEYWORDS or word in _FUNCTIONS:
            continue
        names.add(word)
    return names


def dashboard_exprs(dashboard: dict[str, Any]) -> list[str]:
    exprs = []
    for panel in dashboard["panels"]:
        for inner in [panel, *panel.get("panels", [])]:
            exprs += [target["expr"] for target in inner.get("targets", [])]
    return exprs


def unserved(exprs: Iterable[str], served: set[str]) -> dict[str, set[str]]:
    """Per expression, the names it uses that are neither served, a `risk_` metric (A1's), nor made
    by Prometheus."""
    missing = {}
    for expr in exprs:
        bad = {n for n in metric_names(expr) if n not in served and not n.startswith("risk_")}
        bad -= PROMETHEUS_SYNTHETIC
        if bad:
            missing[expr] = bad
    return missing


def served_names(exposition: str) -> set[str]:
    """Sample names in a /metrics text (what PromQL can select)."""
    names = set()
    for line in exposition.splitlines():
        if line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
        elif line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            # A labelled metric with no child yet has no sample line: count its names too.
            suffixes = {"counter": ["_total", ""], "histogram": ["_bucket", "_sum", "_count"], "gauge": [""]}
            base = name.removesuffix("_total")
            names.update(base + suffix for suffix in suffixes.get(kind, [""]))
    return names


def tool(name: str, package: str) -> str:
    """A Debian tool, installed with apt-get when missing (CI installs it; never skipped)."""
    found = shutil.which(name)
    if found:
        return found
    install = ["apt-get", "install", "-y", "-q", package]
    if subprocess.run(install, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], capture_output=True)
        subprocess.run(install, capture_output=True)
    found = shutil.which(name)
    if not found:
        pytest.fail(f"{name} is needed: `apt-get install {package}` failed (run as root, or install it)")
    return found
