"""The alert rules pass `promtool check rules` and their unit tests (`promtool test rules`), and
the Grafana dashboard is valid JSON whose queries name only served or A1 `risk_` metrics."""

from __future__ import annotations

import json
import subprocess

from prometheus_client import generate_latest

from tests.ops_checks import (
    ALERTS,
    ALERTS_TEST,
    DASHBOARD,
    dashboard_exprs,
    metric_names,
    served_names,
    tool,
    unserved,
)
from worker.runtime.metrics import WorkerMetrics


def test_promtool_checks_the_rules() -> None:
    promtool = tool("promtool", "prometheus")
    result = subprocess.run([promtool, "check", "rules", str(ALERTS)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_of_the_alerts_pass() -> None:
    promtool = tool("promtool", "prometheus")
    result = subprocess.run([promtool, "test", "rules", str(ALERTS_TEST)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_queries_only_served_or_risk_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text())  # valid JSON
    assert dashboard["uid"] == "execworker" and dashboard["panels"]
    exprs = dashboard_exprs(dashboard)
    served = served_names(generate_latest(WorkerMetrics().registry).decode())
    assert unserved(exprs, served) == {}
    named = set().union(*(metric_names(e) for e in exprs))
    assert "risk_shadow_parity_ratio" in named  # the A1 risk panels are on the same screen
    assert {"executor_submit_total", "executor_latency_ms_bucket", "executor_consumer_lag"} <= named


def test_the_metric_name_check_can_fail() -> None:
    served = {"executor_submit_total"}
    assert metric_names('sum by (reason) (rate(executor_submit_total{result="x"}[5m])) > bool 3') == {
        "executor_submit_total"
    }
    assert unserved(["rate(executor_made_up_total[5m])", "risk_anything", "up == 0"], served) == {
        "rate(executor_made_up_total[5m])": {"executor_made_up_total"}
    }


def test_every_alert_metric_is_served_except_the_shadows() -> None:
    import yaml

    rules = yaml.safe_load(ALERTS.read_text())["groups"][0]["rules"]
    served = served_names(generate_latest(WorkerMetrics().registry).decode())
    missing = unserved([rule["expr"] for rule in rules], served)
    # executor_shadow_parity_ratio comes with the shadow executor (issue 12 item 1).
    assert {n for names in missing.values() for n in names} <= {"executor_shadow_parity_ratio"}


def test_every_metric_is_documented() -> None:
    from tests.ops_checks import ROOT

    doc = (ROOT / "docs" / "operations.md").read_text()
    families = {metric.name for metric in WorkerMetrics().registry.collect()}
    # prometheus_client drops `_total` from counter family names
    missing = {name for name in families if f"`{name}" not in doc}
    assert missing == set()
