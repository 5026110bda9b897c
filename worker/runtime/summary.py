"""What one run did, for the operator: counts by status and reason, latency percentiles."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from worker.contract.enums import OrderStatus
from worker.contract.events import ExecEvent
from worker.policy.ids import event_seq
from worker.runtime.histogram import LogHistogram
from worker.runtime.outcomes import OrderDecisions

T = TypeVar("T")


def percentile(sorted_values: list[T], fraction: float) -> T | None:
    """Nearest-rank percentile of an ascending list (None when empty)."""
    if not sorted_values:
        return None
    rank = max(1, -(-len(sorted_values) * fraction // 1))  # ceil(n * fraction), at least 1
    return sorted_values[int(rank) - 1]


@dataclass
class RunSummary:
    consumed: int = 0
    events: int = 0
    by_status: Counter[str] = field(default_factory=Counter)
    by_reason: Counter[str] = field(default_factory=Counter)
    dropped: Counter[str] = field(default_factory=Counter)
    dlq: Counter[str] = field(default_factory=Counter)
    # Send to first answer, once per order; bounded memory (a log-bucketed histogram, < 1% error).
    latencies_ms: LogHistogram = field(default_factory=LogHistogram)
    transactions: int = 0
    aborted: int = 0
    outbox_lines: int = 0
    mode_switches: int = 0
    # Orders that went ahead under a rule in `observe` that would have stopped them, by rule.
    observed: Counter[str] = field(default_factory=Counter)
    # The effective rollout rules (`PreTradePolicy.rules_overview`), shown as they were set.
    rules: list[str] = field(default_factory=list)
    _decisions: OrderDecisions = field(default_factory=OrderDecisions, repr=False)

    def add_events(self, events: list[ExecEvent], round_trips: Mapping[str, int] | None = None) -> None:
        self.events += len(events)
        for event in events:
            self.by_status[event.status.value] += 1
            if event.observed is not None and event_seq(event.event_id) == 1:
                self.observed.update(event.observed)
            if event.reason:
                self.by_reason[f"{event.status.value}:{event.reason}"] += 1
            # Every event goes through is_decision (intents are remembered there).
            decision = self._decisions.is_decision(event)
            if (
                decision
                and event.latency_ms is not None
                and event.status not in (OrderStatus.DENIED, OrderStatus.THROTTLED)
            ):
                self.latencies_ms.record((round_trips or {}).get(event.client_order_id, event.latency_ms))

    def render(self, elapsed_s: float, outbox_root: str, metrics_url: str | None) -> str:
        latencies = self.latencies_ms
        rate = self.consumed / elapsed_s if elapsed_s > 0 else 0.0
        lines = [
            "execworker run summary",
            f"  input messages     {self.consumed:>8}   ({rate:,.0f} msg/s over {elapsed_s:.1f} s)",
            f"  exec-events        {self.events:>8}   in {self.transactions} transactions ({self.aborted} aborted)",
        ]
        for status, count in sorted(self.by_status.items()):
            lines.append(f"    {status:<16} {count:>8}")
        if self.by_reason:
            lines.append("  reasons")
            for reason, count in sorted(self.by_reason.items()):
                lines.append(f"    {reason:<32} {count:>6}")
        if self.dropped:
            lines.append("  commands with no event (idempotent drops)")
            for reason, count in sorted(self.dropped.items()):
                lines.append(f"    {reason:<32} {count:>6}")
        lines += render_rules(self.rules, self.observed)
        if self.mode_switches:
            lines.append(f"  mode switches      {self.mode_switches:>8}   (audit lines in the log)")
        dlq_total = sum(self.dlq.values())
        lines.append(f"  dead-lettered      {dlq_total:>8}")
        for reason, count in sorted(self.dlq.items()):
            lines.append(f"    {reason:<16} {count:>8}")
        p50, p95 = latencies.percentile(0.50), latencies.percentile(0.95)
        lines.append(
            f"  ack latency (ms)   p50 {p50 if p50 is not None else '-'}"
            f"  p95 {p95 if p95 is not None else '-'}  over {len(latencies)} orders"
        )
        lines.append(f"  outbox             {outbox_root}/ready/exec_events/ (+{self.outbox_lines} lines)")
        if metrics_url:
            lines.append(f"  metrics            {metrics_url} (while running)")
        return "\n".join(lines)


def render_rules(rules: list[str], observed: Counter[str]) -> list[str]:
    """The rollout rules in force and what the observed ones would have stopped (summary lines)."""
    lines = []
    if rules:
        lines.append("  rules (enforce | observe | off)")
        lines += [f"    {line}" for line in rules]
    if observed:
        lines.append("  observed: orders that went ahead, would have been stopped by")
        for rule, count in sorted(observed.items()):
            lines.append(f"    {rule:<32} {count:>6}")
    return lines
