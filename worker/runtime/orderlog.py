"""One structured log line per order decision, for an operator following an order.

Built over committed exec-events and DLQ records (what happened, once it is durable), so it needs
nothing from the engine. Every failure is logged (denied, throttled, rejected, unknown outcome,
resent, cancel or amend refused: `outcomes.failure`; dead-lettered); passes are sampled by a
hash of the client order id, the same orders in every run and on every replica, so a sampled
order is logged by whoever handles it.

Lines go to the `execworker.orders` logger; `--log-format json` renders their fields as JSON
(worker.cli.logformat), text renders them as `key=value`.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from typing import Any

from worker.contract.enums import OrderStatus
from worker.contract.events import DlqRecord, ExecEvent
from worker.runtime.outcomes import OrderDecisions, failure

ORDER_LOGGER = "execworker.orders"
DEFAULT_SAMPLE_PASS = 0.01
_HASH_SPACE = 2**64


def pass_sampled(client_order_id: str, rate: float) -> bool:
    """True for a deterministic `rate` share of client order ids (a hash, never a random draw)."""
    if rate >= 1:
        return True
    if rate <= 0:
        return False
    digest = hashlib.blake2b(client_order_id.encode(), digest_size=8, person=b"orderlog").digest()
    return int.from_bytes(digest, "big") < rate * _HASH_SPACE


def order_fields(event: ExecEvent, failed: str | None) -> dict[str, Any]:
    """The line's fields: what was decided, why, and where the input came from."""
    reason = event.reason
    guard = reason[len("guard:") :] if reason and reason.startswith("guard:") else None
    return {
        "kind": "order",
        "client_order_id": event.client_order_id,
        "outcome": "failure" if failed else "pass",
        "failure": failed,
        "event_id": event.event_id,
        "status": event.status.value,
        "reason": reason,
        "reject_reason": reason if event.status is OrderStatus.REJECTED else None,
        "attempt": event.attempt,
        "guard_reason": guard,
        "warmup": reason == "warmup",
        "mode": event.mode,
        "scenario": event.scenario,
        "rounding_applied": event.rounding_applied,
        "rounding_diff": str(event.rounding_diff),
        "symbol": event.symbol,
        "side": event.side.value,
        "qty": str(event.qty),
        "px_intent": None if event.px_intent is None else str(event.px_intent),
        "px_sent": None if event.px_sent is None else str(event.px_sent),
        "latency_ms": event.latency_ms,
        "executor": event.executor,
        "signal_row_id": event.signal_row_id,
        "topic": event.source.topic,
        "partition": event.source.partition,
        "offset": event.source.offset,
    }


def dead_fields(record: DlqRecord) -> dict[str, Any]:
    return {
        "kind": "dead_letter",
        "outcome": "failure",
        "failure": "dead_lettered",
        "status": "DEAD_LETTERED",
        "error_class": record.error_class,
        "reason": record.reason,
        "topic": record.source.topic,
        "partition": record.source.partition,
        "offset": record.source.offset,
    }


def render_text(fields: dict[str, Any]) -> str:
    """`order STATUS key=value ...` (null fields left out; values with spaces quoted)."""
    head = f"{fields['kind']} {fields['status']}"
    parts = []
    for key, value in fields.items():
        if key in ("kind", "status") or value is None:
            continue
        text = str(value).lower() if isinstance(value, bool) else str(value)
        parts.append(f'{key}="{text}"' if (" " in text or not text) else f"{key}={text}")
    return " ".join([head, *parts])


class OrderLog:
    def __init__(self, sample_pass: float = DEFAULT_SAMPLE_PASS, logger: logging.Logger | None = None) -> None:
        if not 0 <= sample_pass <= 1:
            raise ValueError(f"sample_pass must be within 0..1, not {sample_pass}")
        self.sample_pass = sample_pass
        self._logger = logger or logging.getLogger(ORDER_LOGGER)
        self._decisions = OrderDecisions()

    def committed(self, events: Iterable[ExecEvent], dead: Iterable[DlqRecord] = ()) -> None:
        # With the logger off (a bench, a replay), nothing is built per event: no sampling hash,
        # no fields. Every event still goes through `is_decision`, which remembers intents.
        logging_orders = self._logger.isEnabledFor(logging.INFO)
        for event in events:
            decision = self._decisions.is_decision(event)
            if not logging_orders:
                continue
            failed = failure(event)
            if failed or (decision and pass_sampled(event.client_order_id, self.sample_pass)):
                self._emit(order_fields(event, failed), logging.INFO)
        for record in dead:
            self._emit(dead_fields(record), logging.WARNING)

    def _emit(self, fields: dict[str, Any], level: int) -> None:
        if self._logger.isEnabledFor(level):
            self._logger.log(level, render_text(fields), extra={"fields": fields})
