"""Prometheus metrics of one worker, on their own registry (tests run several workers at once).

Order metrics count orders, not exec-events: each order is counted once, at its decision (see
`worker.runtime.outcomes`), with a bounded `reason` label. Metric names and meanings are listed
in docs/operations.md; ops/grafana and ops/prometheus query them by these names.
"""

from __future__ import annotations

import time
from collections import Counter as Counter_
from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from worker.codec.errors import ErrorClass
from worker.contract.enums import OrderStatus
from worker.contract.events import ExecEvent
from worker.core.parity import PARITY_WINDOW, ParityField
from worker.policy.ids import event_seq
from worker.policy.rules import RULE_OUTCOME
from worker.runtime.outcomes import OrderDecisions, reason_label

# Order acknowledgement latency buckets (ms): co-located REST is single-digit ms, a congested
# venue hundreds; 5 s is where an order is treated as an unknown outcome.
LATENCY_BUCKETS_MS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)
# Transaction commit (begin .. commit acknowledged): ~7 ms on a local broker, far more on a
# loaded or remote cluster.
COMMIT_BUCKETS_S = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)

BATCH_OUTCOMES = ("committed", "aborted", "fenced")
# result label of executor_submit_total
ACCEPTED, REJECTED = "accepted", "rejected"


class WorkerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self._decisions = OrderDecisions()
        self._modes: dict[str, str] = {}  # symbol -> mode whose gauge is 1
        self._last_outbox_publish: float | None = None
        self.submit = Counter(
            "executor_submit_total",
            "Orders handed to an executor, once per order at its first answer, by result and bounded reason.",
            ["result", "reason"],
            registry=r,
        )
        self.pre_deny = Counter(
            "executor_pre_deny_total", "Orders denied before any venue call.", ["reason"], registry=r
        )
        self.throttle = Counter(
            "executor_throttle_total", "Orders throttled before any venue call.", ["reason"], registry=r
        )
        self.latency = Histogram(
            "executor_latency_ms",
            "Send to first answer, once per order (ack_ts_ms - sent_ts_ms of the first answer).",
            buckets=LATENCY_BUCKETS_MS,
            registry=r,
        )
        self.dlq = Counter(
            "executor_dlq_total", "Input messages sent to the DLQ, by error class.", ["reason"], registry=r
        )
        self.dropped = Counter(
            "executor_command_dropped_total",
            "Commands that produced no event (duplicate id, unknown or finished target).",
            ["reason"],
            registry=r,
        )
        self.rule_observed = Counter(
            "executor_rule_observed_total",
            "Orders that went ahead although a rule in `observe` would have stopped them, by rule and the "
            "status it would have given (DENIED, THROTTLED); counted once per order, at its first event.",
            ["rule", "outcome"],
            registry=r,
        )
        self.events = Counter("executor_exec_events_total", "Exec-events committed.", ["status"], registry=r)
        self.batches = Counter("executor_batches_total", "Transactions by outcome.", ["outcome"], registry=r)
        self.commit_seconds = Histogram(
            "executor_transaction_commit_seconds",
            "Time to commit one transaction (events, DLQ records, offsets).",
            buckets=COMMIT_BUCKETS_S,
            registry=r,
        )
        self.outbox_lines = Counter("executor_outbox_lines_total", "Lines written to ready/ outbox files.", registry=r)
        self.outbox_errors = Counter(
            "executor_outbox_errors_total", "Outbox publishes that failed (mirroring paused).", registry=r
        )
        self.outbox_age = Gauge(
            "executor_outbox_ready_age_seconds",
            "Seconds since lines were last written to ready/ (-1 before the first).",
            registry=r,
        )
        self.outbox_age.set_function(self._outbox_age)
        self.reconciled = Counter(
            "executor_reconciled_events_total", "Exec-events learned from the venue by reconciliation.", registry=r
        )
        self.reconcile_backlog = Gauge(
            "executor_reconcile_backlog",
            "Orders not finished here (resting or outcome unknown) that reconciliation re-checks.",
            registry=r,
        )
        self.in_flight = Gauge(
            "executor_in_flight_orders",
            "Orders sent (intent committed) whose venue outcome is not known yet.",
            registry=r,
        )
        self.mode_switches = Counter(
            "executor_mode_switch_total", "Strategy mode switches (audit).", ["old", "new", "trigger"], registry=r
        )
        self.mode = Gauge(
            "executor_mode",
            "1 for the mode in force per symbol (of its last order), 0 for modes it left.",
            ["symbol", "mode"],
            registry=r,
        )
        self.control_errors = Counter(
            "executor_control_errors_total",
            "Control messages (mode, health) that could not be used.",
            ["topic"],
            registry=r,
        )
        self.lag = Gauge(
            "executor_consumer_lag",
            "Messages behind the end of each input partition.",
            ["topic", "partition"],
            registry=r,
        )
        self.event_time_lag = Gauge(
            "executor_event_time_lag_seconds",
            "Wall clock minus the newest event_ts_ms committed (live: how far behind the market).",
            registry=r,
        )
        self.venue_weight = Gauge(
            "executor_venue_weight_used_1m",
            "Request weight the venue reports used in the current minute (X-MBX-USED-WEIGHT-1M).",
            registry=r,
        )
        self.venue_weight_limit = Gauge(
            "executor_venue_weight_limit_1m", "The venue's request weight limit per minute.", registry=r
        )
        self.venue_orders = Gauge(
            "executor_venue_orders_10s",
            "Orders the venue reports in the current 10 s window (X-MBX-ORDER-COUNT-10S).",
            registry=r,
        )

        # Shadow execution (`run --shadow`, worker/runtime/shadow.py): served with or without a
        # shadow, so that the dashboard and the alert always find them.
        self.shadow_parity = Gauge(
            "executor_shadow_parity_ratio",
            f"Share of the last {PARITY_WINDOW} compared orders whose shadow answer matched the primary's "
            "(intent price, status, reject reason, fill price within a tick); 1 before the first.",
            registry=r,
        )
        self.shadow_parity.set(1.0)
        self.shadow_compared = Counter(
            "executor_shadow_compared_total", "Orders whose primary and shadow answers were compared.", registry=r
        )
        self.shadow_mismatch = Counter(
            "executor_shadow_mismatch_total",
            "Compared orders on which the shadow differed, by field (one order may differ on several).",
            ["field"],
            registry=r,
        )
        self.shadow_market = Counter(
            "executor_shadow_market_snapshots_total",
            "market.v1 snapshots handed to a backtest shadow's market view (0: it has no quotes yet).",
            registry=r,
        )
        for parity_field in ParityField:
            self.shadow_mismatch.labels(parity_field.value)

        # Series that alerts take `increase()` of exist from the start at 0, so that the first
        # dead letter or aborted transaction is an increase (a series born at 1 is not).
        for error_class in ErrorClass:
            self.dlq.labels(error_class.value)
        for outcome in BATCH_OUTCOMES:
            self.batches.labels(outcome)

    def committed(self, events: Iterable[ExecEvent], round_trips: Mapping[str, int] | None = None) -> None:
        """Counts a committed batch's events (never an aborted one's), one increment per label;
        an order's latency once, its venue round trip if known (`round_trips`), else its event's."""
        by_status: Counter_[OrderStatus] = Counter_()
        by_order: Counter_[tuple[OrderStatus, str]] = Counter_()
        observed: Counter_[str] = Counter_()
        newest_event_ms: int | None = None
        for event in events:
            by_status[event.status] += 1
            newest_event_ms = event.event_ts_ms if newest_event_ms is None else max(newest_event_ms, event.event_ts_ms)
            self._set_mode(event.symbol, event.mode)
            if event.observed is not None and event_seq(event.event_id) == 1:
                observed.update(event.observed)
            if not self._decisions.is_decision(event):
                continue
            by_order[(event.status, reason_label(event.reason))] += 1
            if event.status not in (OrderStatus.DENIED, OrderStatus.THROTTLED) and event.latency_ms is not None:
                self.latency.observe((round_trips or {}).get(event.client_order_id, event.latency_ms))
        for rule, count in observed.items():
            self.rule_observed.labels(rule, RULE_OUTCOME.get(rule, "unknown")).inc(count)
        for status, count in by_status.items():
            self.events.labels(status.value).inc(count)
        for (status, reason), count in by_order.items():
            if status is OrderStatus.DENIED:
                self.pre_deny.labels(reason).inc(count)
            elif status is OrderStatus.THROTTLED:
                self.throttle.labels(reason).inc(count)
            else:
                self.submit.labels(REJECTED if status is OrderStatus.REJECTED else ACCEPTED, reason).inc(count)
        if newest_event_ms is not None:
            self.event_time_lag.set(max(0.0, time.time() - newest_event_ms / 1000))

    def _set_mode(self, symbol: str, mode: str) -> None:
        previous = self._modes.get(symbol)
        if previous == mode:
            return
        if previous is not None:
            self.mode.labels(symbol, previous).set(0)
        self.mode.labels(symbol, mode).set(1)
        self._modes[symbol] = mode

    def outbox_published(self, lines: int) -> None:
        self.outbox_lines.inc(lines)
        self._last_outbox_publish = time.monotonic()

    def _outbox_age(self) -> float:
        if self._last_outbox_publish is None:
            return -1.0
        return time.monotonic() - self._last_outbox_publish

    def observe_venue(self, executor: Any) -> None:
        """Venue rate budget from an executor that has one (`executor.client.budget`, the live
        executor's `RateBudget`); a no-op for the backtest. Called from the worker's loop."""
        budget = getattr(getattr(executor, "client", None), "budget", None)
        if budget is None:
            return
        for gauge, name in (
            (self.venue_weight, "used_weight_1m"),
            (self.venue_weight_limit, "weight_limit_1m"),
            (self.venue_orders, "orders_10s"),
        ):
            value = getattr(budget, name, None)
            if isinstance(value, int | float):
                gauge.set(value)

    def serve(self, port: int, host: str = "127.0.0.1") -> None:
        start_http_server(port, addr=host, registry=self.registry)
