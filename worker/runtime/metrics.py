"""Prometheus metrics of one worker, on their own registry (tests run several workers at once)."""

from __future__ import annotations

from collections import Counter as Counter_
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from worker.contract.enums import OrderStatus
from worker.contract.events import ExecEvent
from worker.policy.ids import event_seq
from worker.policy.rules import RULE_OUTCOME

# Order acknowledgement latency buckets (ms): co-located REST is single-digit ms, a congested
# venue hundreds; 5 s is where an order is treated as an unknown outcome.
LATENCY_BUCKETS_MS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)


class WorkerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.submit = Counter(
            "executor_submit_total",
            "Orders sent to an executor, by result and reason.",
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
            "Venue acknowledgement latency (ack_ts_ms - sent_ts_ms).",
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
        self.outbox_lines = Counter("executor_outbox_lines_total", "Lines written to ready/ outbox files.", registry=r)
        self.outbox_errors = Counter(
            "executor_outbox_errors_total", "Outbox publishes that failed (mirroring paused).", registry=r
        )
        self.reconciled = Counter(
            "executor_reconciled_events_total", "Exec-events learned from the venue by reconciliation.", registry=r
        )
        self.mode_switches = Counter(
            "executor_mode_switch_total", "Strategy mode switches (audit).", ["old", "new", "trigger"], registry=r
        )
        self.mode = Gauge("executor_mode", "1 for the mode in force per symbol.", ["symbol", "mode"], registry=r)
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

    def committed(self, events: Iterable[ExecEvent]) -> None:
        """Counts a committed batch's events (never an aborted one's), one increment per label."""
        by_label: Counter_[tuple[OrderStatus, str]] = Counter_()
        observed: Counter_[str] = Counter_()
        for event in events:
            by_label[(event.status, event.reason or "")] += 1
            if event.latency_ms is not None:
                self.latency.observe(event.latency_ms)
            if event.observed is not None and event_seq(event.event_id) == 1:
                observed.update(event.observed)
        for rule, count in observed.items():
            self.rule_observed.labels(rule, RULE_OUTCOME.get(rule, "unknown")).inc(count)
        for (status, reason), count in by_label.items():
            self.events.labels(status.value).inc(count)
            if status is OrderStatus.DENIED:
                self.pre_deny.labels(reason).inc(count)
            elif status is OrderStatus.THROTTLED:
                self.throttle.labels(reason).inc(count)
            else:
                result = "rejected" if status is OrderStatus.REJECTED else "accepted"
                self.submit.labels(result, reason).inc(count)

    def serve(self, port: int, host: str = "127.0.0.1") -> None:
        start_http_server(port, addr=host, registry=self.registry)
