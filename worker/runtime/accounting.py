"""What a committed transaction adds to the run summary, the metrics, the order log and the
mode-switch audit."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from worker.contract.events import DlqRecord, ExecEvent
from worker.policy.modes import ModeSwitch
from worker.runtime.metrics import WorkerMetrics
from worker.runtime.orderlog import OrderLog
from worker.runtime.summary import RunSummary

log = logging.getLogger("worker.runtime.worker")  # the audit lines keep their logger name


class Accounting:
    def __init__(self, summary: RunSummary, metrics: WorkerMetrics, order_log: OrderLog) -> None:
        self.summary = summary
        self.metrics = metrics
        self.order_log = order_log

    def committed(
        self,
        consumed: int,
        events: Sequence[ExecEvent],
        dead: Sequence[DlqRecord] = (),
        dropped: Sequence[str] = (),
        switches: Sequence[ModeSwitch] = (),
        round_trips: Mapping[str, int] | None = None,
    ) -> None:
        """`round_trips`: a live venue's answer times by client order id (without retry backoff),
        the latency recorded for those orders instead of their events' `latency_ms`."""
        self.audit(switches)
        events = events if isinstance(events, list) else list(events)  # one list for the three
        self.summary.consumed += consumed
        self.summary.transactions += 1
        self.summary.add_events(events, round_trips)
        self.metrics.batches.labels("committed").inc()
        self.metrics.committed(events, round_trips)
        self.order_log.committed(events, dead)
        for record in dead:
            self.summary.dlq[record.error_class] += 1
            self.metrics.dlq.labels(record.error_class).inc()
        for reason in dropped:
            self.summary.dropped[reason] += 1
            self.metrics.dropped.labels(reason).inc()

    def aborted(self) -> None:
        self.summary.aborted += 1
        self.metrics.batches.labels("aborted").inc()

    def audit(self, switches: Sequence[ModeSwitch]) -> None:
        """Every mode switch is an audit record: a log line and a counter (old, new, trigger)."""
        for switch in switches:
            log.info(
                "audit: mode %s -> %s (trigger %s) at event time %d",
                switch.old,
                switch.new,
                switch.trigger,
                switch.at_ms,
            )
            self.metrics.mode_switches.labels(switch.old, switch.new, switch.trigger).inc()
            self.summary.mode_switches += 1
