"""Metrics that count orders, bounded labels, the bounded latency histogram and the order log
(issue 12, items 2 and 4)."""

from __future__ import annotations

import logging
import random
from decimal import Decimal
from typing import Any

import orjson
import pytest
from prometheus_client import generate_latest

from worker.cli.logformat import JsonFormatter
from worker.contract.enums import OrderStatus, Side
from worker.contract.events import DlqRecord, ExecEvent
from worker.contract.orders import SourceRef
from worker.runtime.histogram import LogHistogram
from worker.runtime.metrics import WorkerMetrics
from worker.runtime.orderlog import ORDER_LOGGER, OrderLog, pass_sampled
from worker.runtime.outcomes import OrderDecisions, reason_label
from worker.runtime.summary import RunSummary, percentile


def event(coid: str, seq: int, status: OrderStatus, **fields: Any) -> ExecEvent:
    base: dict[str, Any] = {
        "event_id": f"{coid}.{seq}",
        "client_order_id": coid,
        "signal_row_id": f"row-{coid}",
        "symbol": "BTCUSDT",
        "side": Side.BUY,
        "qty": Decimal("0.01"),
        "px_intent": Decimal("100"),
        "px_sent": Decimal("100"),
        "px_fill": None,
        "qty_filled": Decimal(0),
        "rounding_applied": False,
        "rounding_diff": Decimal(0),
        "slippage_bps": None,
        "exchange_order_id": None,
        "status": status,
        "reason": None,
        "sent_ts_ms": None,
        "ack_ts_ms": None,
        "event_ts_ms": 1_700_000_000_000,
        "latency_ms": None,
        "executor": "sandbox",
        "mode": "default",
        "scenario": "base",
        "source": SourceRef(topic="decisions.v1", partition=0, offset=seq),
    }
    base.update(fields)
    if base["sent_ts_ms"] is not None and base["ack_ts_ms"] is not None:
        base["latency_ms"] = base["ack_ts_ms"] - base["sent_ts_ms"]
    return ExecEvent(**base)


def venue_order(coid: str, answer: OrderStatus, reason: str | None = None, latency: int = 7) -> list[ExecEvent]:
    """Intent, first answer, and (for an accepted order) a fill much later."""
    events = [
        event(coid, 1, OrderStatus.SUBMITTED, sent_ts_ms=1000),
        event(coid, 2, answer, reason=reason, sent_ts_ms=1000, ack_ts_ms=1000 + latency),
    ]
    if answer is OrderStatus.ACCEPTED:
        events.append(event(coid, 3, OrderStatus.FILLED, sent_ts_ms=1000, ack_ts_ms=90_000))
    return events


def sample_value(metrics: WorkerMetrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


# -- orders, not events -----------------------------------------------------------------------


def test_a_venue_order_counts_once_and_its_latency_once() -> None:
    metrics = WorkerMetrics()
    metrics.committed(venue_order("a", OrderStatus.ACCEPTED, latency=7))  # intent, answer, fill
    metrics.committed(venue_order("b", OrderStatus.REJECTED, "venue:-2010:Account has insufficient balance"))
    assert sample_value(metrics, "executor_submit_total", result="accepted", reason="none") == 1
    assert sample_value(metrics, "executor_submit_total", result="rejected", reason="venue_2010") == 1
    assert sample_value(metrics, "executor_latency_ms_count") == 2  # one per order, not per event
    assert sample_value(metrics, "executor_latency_ms_sum") == 7 + 7  # the fill's 89 s is not a latency
    assert sample_value(metrics, "executor_exec_events_total", status="SUBMITTED") == 2


def test_answers_split_across_batches_and_a_restart_still_count_once() -> None:
    intent, answer, fill = venue_order("a", OrderStatus.ACCEPTED)
    metrics = WorkerMetrics()
    metrics.committed([intent])
    metrics.committed([answer])
    metrics.committed([fill])
    assert sample_value(metrics, "executor_submit_total", result="accepted", reason="none") == 1
    # A new process that never saw the intent (committed before a restart): event 2 is the answer.
    restarted = WorkerMetrics()
    restarted.committed([answer, fill])
    assert sample_value(restarted, "executor_submit_total", result="accepted", reason="none") == 1


def test_backtest_orders_and_gated_orders_count_once() -> None:
    decisions = OrderDecisions()
    filled = event("b", 1, OrderStatus.ACCEPTED, executor="backtest", sent_ts_ms=1, ack_ts_ms=5)
    later = event("b", 2, OrderStatus.FILLED, executor="backtest", sent_ts_ms=1, ack_ts_ms=50)
    denied = event("d", 1, OrderStatus.DENIED, reason="guard:news blackout")
    assert [decisions.is_decision(e) for e in (filled, later, denied)] == [True, False, True]
    metrics = WorkerMetrics()
    metrics.committed([denied, event("t", 1, OrderStatus.THROTTLED, reason="rate_symbol")])
    assert sample_value(metrics, "executor_pre_deny_total", reason="guard") == 1
    assert sample_value(metrics, "executor_throttle_total", reason="rate_symbol") == 1


def test_pending_intents_are_bounded() -> None:
    decisions = OrderDecisions(capacity=10)
    for index in range(1000):
        decisions.is_decision(event(f"o{index}", 1, OrderStatus.SUBMITTED))
    assert len(decisions._pending) == 10


@pytest.mark.parametrize(
    ("reason", "label"),
    [
        (None, "none"),
        ("warmup", "warmup"),
        ("guard:whatever free text", "guard"),
        ("venue:-2010:Account has insufficient balance for requested action.", "venue_2010"),
        ("venue:-9999:something new", "venue_other"),
        ("venue:x:y", "venue_other"),
        ("not_sent:HTTP 429: rate limited", "http_429"),
        ("not_sent:HTTP 418: IP banned by the venue", "http_418"),
        ("not_sent:cannot connect: [Errno 111]", "not_sent"),
        ("a reason nobody listed", "other"),
    ],
)
def test_reason_labels_are_bounded(reason: str | None, label: str) -> None:
    assert reason_label(reason) == label


def test_free_venue_text_makes_no_new_series() -> None:
    metrics = WorkerMetrics()
    for index in range(50):
        metrics.committed(venue_order(f"r{index}", OrderStatus.REJECTED, f"venue:-2010:balance {index} short"))
    text = generate_latest(metrics.registry).decode()
    series = [line for line in text.splitlines() if line.startswith("executor_submit_total{")]
    assert series == ['executor_submit_total{reason="venue_2010",result="rejected"} 50.0']


def test_executor_mode_gauge_follows_the_last_order_per_symbol() -> None:
    metrics = WorkerMetrics()
    metrics.committed([event("a", 1, OrderStatus.DENIED, mode="calm", reason="warmup")])
    assert sample_value(metrics, "executor_mode", symbol="BTCUSDT", mode="calm") == 1
    metrics.committed([event("b", 1, OrderStatus.DENIED, mode="storm", reason="warmup")])
    assert sample_value(metrics, "executor_mode", symbol="BTCUSDT", mode="calm") == 0
    assert sample_value(metrics, "executor_mode", symbol="BTCUSDT", mode="storm") == 1


def test_venue_budget_and_outbox_age_are_exposed() -> None:
    class Budget:
        used_weight_1m = 120
        weight_limit_1m = 6000
        orders_10s = 3

    class Client:
        budget = Budget()

    class Executor:
        client = Client()

    metrics = WorkerMetrics()
    assert sample_value(metrics, "executor_outbox_ready_age_seconds") == -1
    metrics.observe_venue(Executor())
    metrics.observe_venue(object())  # the backtest: nothing to read, nothing changes
    metrics.outbox_published(3)
    assert sample_value(metrics, "executor_venue_weight_used_1m") == 120
    assert sample_value(metrics, "executor_venue_weight_limit_1m") == 6000
    assert sample_value(metrics, "executor_venue_orders_10s") == 3
    assert sample_value(metrics, "executor_outbox_lines_total") == 3
    assert 0 <= sample_value(metrics, "executor_outbox_ready_age_seconds") < 60


# -- bounded latency memory -------------------------------------------------------------------


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_histogram_percentiles_are_within_one_percent_of_exact(seed: int) -> None:
    rng = random.Random(seed)
    values = [int(rng.expovariate(1 / 40)) for _ in range(20_000)] + [rng.randrange(0, 5_000_000) for _ in range(500)]
    histogram = LogHistogram()
    for value in values:
        histogram.record(value)
    exact = sorted(values)
    for fraction in (0.01, 0.5, 0.9, 0.95, 0.99, 0.999, 1.0):
        want = percentile(exact, fraction)
        got = histogram.percentile(fraction)
        assert want is not None and got is not None
        assert got <= want and want - got <= want / 128, (fraction, want, got)
    assert histogram.percentile(0.0001) == min(values) or histogram.percentile(0.0001) == exact[1]
    assert histogram.percentile(1.0) == max(values) - (max(values) % (1 << (max(values).bit_length() - 8)))
    assert len(histogram.counts) <= 128 * 64


def test_histogram_small_values_are_exact_and_memory_does_not_grow() -> None:
    histogram = LogHistogram()
    for value in range(256):
        histogram.record(value)
    assert [histogram.percentile(q) for q in (0.5, 1.0)] == [percentile(list(range(256)), q) for q in (0.5, 1.0)]
    buckets = len(histogram.counts)
    for _ in range(100_000):
        histogram.record(42)
    assert len(histogram.counts) == buckets and len(histogram) == 100_256
    assert LogHistogram().percentile(0.5) is None


def test_run_summary_counts_latency_once_per_order() -> None:
    summary = RunSummary()
    summary.add_events(venue_order("a", OrderStatus.ACCEPTED, latency=9))
    summary.add_events(venue_order("b", OrderStatus.FILLED, latency=11))
    assert len(summary.latencies_ms) == 2
    assert "p50 9  p95 11  over 2 orders" in summary.render(1.0, "var/outbox", None)


# -- the order log ----------------------------------------------------------------------------


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def captured_log(sample_pass: float = 0.01) -> tuple[OrderLog, Capture]:
    logger = logging.getLogger(f"{ORDER_LOGGER}.test{random.random()}")
    logger.setLevel(logging.DEBUG)
    capture = Capture()
    logger.addHandler(capture)
    logger.propagate = False
    return OrderLog(sample_pass, logger), capture


def test_every_failure_is_logged_and_passes_near_one_percent() -> None:
    order_log, capture = captured_log()
    failures: set[str] = set()
    passes = 0
    for index in range(20_000):
        coid = f"c{index:06d}"
        kind = index % 5
        if kind == 0:
            order_log.committed([event(coid, 1, OrderStatus.DENIED, reason="guard:halt")])
            failures.add(coid)
        elif kind == 1:
            order_log.committed([event(coid, 1, OrderStatus.THROTTLED, reason="rate_global")])
            failures.add(coid)
        elif kind == 2:
            order_log.committed(venue_order(coid, OrderStatus.REJECTED, "venue:-2010:no"))
            failures.add(coid)
        else:
            order_log.committed(venue_order(coid, OrderStatus.ACCEPTED))  # intent, answer, fill
            passes += 1
    dead = DlqRecord(
        source=SourceRef(topic="decisions.v1", partition=1, offset=77),
        error_class="schema",
        reason="qty: must be > 0",
        key_b64=None,
        value_b64=None,
        headers=[],
        timestamp_ms=0,
    )
    order_log.committed([], [dead])
    fields = [record.fields for record in capture.records]  # type: ignore[attr-defined]
    logged_failures = {f["client_order_id"] for f in fields if f["outcome"] == "failure" and f["kind"] == "order"}
    assert logged_failures == failures  # every failure, each traceable by its id and input offset
    assert all(f["topic"] and f["offset"] is not None for f in fields)
    logged_passes = [f for f in fields if f["outcome"] == "pass"]
    assert len({f["client_order_id"] for f in logged_passes}) == len(logged_passes)  # one line per order
    assert 0.005 * passes <= len(logged_passes) <= 0.015 * passes, len(logged_passes)
    assert all(f["status"] == "ACCEPTED" for f in logged_passes)  # the decision, not the intent or fill
    assert [f["offset"] for f in fields if f["kind"] == "dead_letter"] == [77]
    guard = next(f for f in fields if f["status"] == "DENIED")
    assert (guard["guard_reason"], guard["warmup"], guard["scenario"]) == ("halt", False, "base")


def test_sampling_is_deterministic_by_client_order_id() -> None:
    ids = [f"x{index}" for index in range(5000)]
    first = [pass_sampled(coid, 0.01) for coid in ids]
    assert first == [pass_sampled(coid, 0.01) for coid in ids]
    assert all(pass_sampled(coid, 1.0) for coid in ids) and not any(pass_sampled(coid, 0.0) for coid in ids)
    # A larger rate keeps every id a smaller rate picked (an operator raising it loses nothing).
    assert all(pass_sampled(c, 0.05) for c, picked in zip(ids, first, strict=True) if picked)


def test_json_lines_carry_the_fields() -> None:
    order_log, capture = captured_log(sample_pass=1.0)
    order_log.committed([event("j1", 1, OrderStatus.DENIED, reason="warmup", rounding_applied=True)])
    (record,) = capture.records
    line = orjson.loads(JsonFormatter().format(record))
    assert line["level"] == "INFO" and line["logger"].startswith(ORDER_LOGGER)
    assert (line["client_order_id"], line["warmup"], line["rounding_applied"]) == ("j1", True, True)
    assert (line["topic"], line["partition"], line["offset"]) == ("decisions.v1", 0, 1)
    assert line["msg"].startswith("order DENIED client_order_id=j1")


def test_an_unknown_outcome_then_a_resend_then_an_answer_counts_once() -> None:
    intent = event("u", 1, OrderStatus.SUBMITTED, sent_ts_ms=1000, attempt=1)
    unknown = event("u", 2, OrderStatus.UNKNOWN, reason="unknown_outcome:TimeoutError", sent_ts_ms=1000)
    resend = event("u", 3, OrderStatus.SUBMITTED, reason="resend", sent_ts_ms=9000, attempt=2)
    answer = event("u", 4, OrderStatus.ACCEPTED, sent_ts_ms=9000, ack_ts_ms=9006)
    fill = event("u", 5, OrderStatus.FILLED, sent_ts_ms=9000, ack_ts_ms=20_000)
    metrics = WorkerMetrics()
    for batch in ([intent], [unknown], [resend], [answer], [fill]):
        metrics.committed(batch)
    assert sample_value(metrics, "executor_submit_total", result="accepted", reason="none") == 1
    assert sample_value(metrics, "executor_latency_ms_sum") == 6
    summary = RunSummary()
    for batch in ([intent], [unknown], [resend], [answer], [fill]):
        summary.add_events(batch)
    assert (len(summary.latencies_ms), summary.latencies_ms.percentile(1.0)) == (1, 6)
    order_log, capture = captured_log(sample_pass=0.0)
    order_log.committed([intent, unknown, resend, answer, fill])
    failures = [(r.fields["status"], r.fields["failure"]) for r in capture.records]  # type: ignore[attr-defined]
    assert failures == [("UNKNOWN", "unknown"), ("SUBMITTED", "resent")]


def test_refused_cancels_and_amends_are_failures_with_bounded_labels() -> None:
    refused = event("c", 4, OrderStatus.PENDING_CANCEL, reason="cancel_refused:venue:-2011:Unknown order sent.")
    amend = event("c", 5, OrderStatus.ACCEPTED, reason="amend_refused:amend_unsupported")
    order_log, capture = captured_log(sample_pass=0.0)
    order_log.committed([refused, amend])
    assert [r.fields["failure"] for r in capture.records] == ["cancel_refused", "amend_refused"]  # type: ignore[attr-defined]
    assert reason_label(refused.reason) == "cancel_refused"
    assert reason_label("not_at_venue_after_3_attempts") == "not_at_venue_after"
    assert reason_label("unknown_outcome:ServerDisconnectedError after sending") == "unknown_outcome"


def test_an_order_log_switched_off_still_follows_intents() -> None:
    order_log, capture = captured_log(sample_pass=1.0)
    capture_logger = order_log._logger
    capture_logger.setLevel(logging.WARNING)  # off: nothing is built or logged ...
    order_log.committed([event("o", 1, OrderStatus.SUBMITTED, sent_ts_ms=1000)])
    assert capture.records == []
    capture_logger.setLevel(logging.INFO)  # ... but the intent was remembered: its answer is the decision
    order_log.committed([event("o", 2, OrderStatus.ACCEPTED, sent_ts_ms=1000, ack_ts_ms=1007)])
    order_log.committed([event("o", 3, OrderStatus.FILLED, sent_ts_ms=1000, ack_ts_ms=9000)])
    assert [r.fields["status"] for r in capture.records] == ["ACCEPTED"]  # type: ignore[attr-defined]
