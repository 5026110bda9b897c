"""Orders, not events: which committed exec-event is an order's decision, and bounded reasons.

An order produces several exec-events (a venue order: the SUBMITTED intent, then the venue's
answer, then fills), so counting events counts orders twice or more. An order's *decision* is
  * its only event when a local gate stopped it (DENIED, THROTTLED), or
  * its first answer: the first event with a venue status (ACCEPTED ... REJECTED); the intent
    before it and the fills after it are not decisions.
`OrderDecisions` tells them apart from the events alone plus the intents it has seen, so metrics,
the run summary and the order log all count one per order.

Reasons carry free venue text (`venue:-2010:Account has insufficient balance ...`); a metric label
must not (every distinct text is a new time series). `reason_label` maps a reason onto a fixed set.
"""

from __future__ import annotations

from collections.abc import Iterable

from worker.contract.enums import OrderStatus
from worker.contract.events import ExecEvent
from worker.io.binance.protocol import ErrorCode
from worker.policy.ids import event_seq as seq_of

UNSENT = frozenset({OrderStatus.DENIED, OrderStatus.THROTTLED})
ANSWERS = frozenset(
    {
        OrderStatus.ACCEPTED,
        OrderStatus.PARTIALLY_FILLED,
        OrderStatus.FILLED,
        OrderStatus.CANCELED,
        OrderStatus.EXPIRED,
        OrderStatus.REJECTED,
    }
)
# Orders waiting for their first answer: the intent (SUBMITTED, a resend too) or UNKNOWN.
AWAITING = frozenset({OrderStatus.SUBMITTED, OrderStatus.UNKNOWN})
FAILURE_STATUSES = frozenset({OrderStatus.DENIED, OrderStatus.THROTTLED, OrderStatus.REJECTED, OrderStatus.UNKNOWN})

# Executors whose orders are answered in the event that records them (no intent first).
_NO_INTENT_EXECUTORS = frozenset({"backtest"})
# At most this many orders awaiting a first answer are remembered (bounded memory even if
# answers never come); the oldest are forgotten first.
PENDING_CAPACITY = 100_000


def failure(event: ExecEvent) -> str | None:
    """What went wrong, for an event an operator must be able to follow; None for the rest:
    denied, throttled, rejected, unknown outcome, resent (an intent after the first), a refused
    cancel or amend (recorded with `cancel_refused:` / `amend_refused:` reasons)."""
    if event.status in FAILURE_STATUSES:
        return event.status.value.lower()
    if event.status is OrderStatus.SUBMITTED and (event.attempt or 1) > 1:
        return "resent"
    reason = event.reason or ""
    if reason.startswith("cancel_refused:"):
        return "cancel_refused"
    if reason.startswith("amend_refused:"):
        return "amend_refused"
    return None


def event_seq(event: ExecEvent) -> int:
    """The event's position in its order's life (event ids are `{client_order_id}.{seq}`)."""
    return seq_of(event.event_id)


class OrderDecisions:
    """Picks each order's decision event out of a stream of committed exec-events."""

    def __init__(self, capacity: int = PENDING_CAPACITY) -> None:
        self._pending: dict[str, None] = {}  # orders with an intent and no answer yet (ordered)
        self._capacity = capacity

    def is_decision(self, event: ExecEvent) -> bool:
        if event.status in UNSENT:
            return True
        coid = event.client_order_id
        if event.status not in ANSWERS:
            if event.status in AWAITING:
                self._pending[coid] = None
                if len(self._pending) > self._capacity:
                    del self._pending[next(iter(self._pending))]
            return False
        seq = event_seq(event)
        if coid in self._pending:
            del self._pending[coid]
            return True
        # Without the intent in memory (committed by an earlier process): an intent is event 1,
        # so a venue executor's first answer is event 2; a backtest's is event 1. (An order that
        # went UNKNOWN or was resent before a restart is not counted by the new process.)
        if event.executor in _NO_INTENT_EXECUTORS:
            return seq == 1
        return seq == 2

    def decisions(self, events: Iterable[ExecEvent]) -> list[ExecEvent]:
        return [event for event in events if self.is_decision(event)]


# Reasons that are already from a fixed set (gates, rounding, fill models, the executors).
KNOWN_REASONS = frozenset(
    {
        "warmup",
        "harvest_stale",
        "weak_signal",
        "low_consistency",
        "rate_symbol",
        "rate_global",
        "qty_below_step",
        "px_below_tick",
        "min_notional",
        "no_reference_price",
        "no_market_data",
        "no_book",
        "limit_not_reached",
        "book_exhausted",
        "venue_banned",
        "unknown_outcome",
        "expired_before_send",
        "resend",
        "not_at_venue",
        "not_at_venue_source_gone",
        "cancel_requested",
        "canceled",
        "canceled_before_venue",
        "amended",
        "unknown_order",
        "unknown_symbol",
        "amend_unsupported",
    }
)
# Reasons with a free part after a fixed prefix: the prefix is the label.
_PREFIXES = ("guard", "cancel_refused", "amend_refused", "unknown_outcome", "not_at_venue_after")
_VENUE_CODES = frozenset(code.value for code in ErrorCode)


def reason_label(reason: str | None) -> str:
    """A bounded label for a reason: known reasons as they are, the prefix of a reason with a
    free part (`guard`, `cancel_refused`, `not_at_venue_after`, ...), `venue_<code>` for a known
    venue error code, `http_429`/`http_418`, `not_sent`, else `other`."""
    if not reason:
        return "none"
    if reason in KNOWN_REASONS:
        return reason
    for prefix in _PREFIXES:
        if reason.startswith(prefix):
            return prefix
    if reason.startswith("venue:"):
        code = reason.split(":", 2)[1]
        try:
            number = int(code)
        except ValueError:
            return "venue_other"
        return f"venue_{-number}" if number in _VENUE_CODES else "venue_other"
    if reason.startswith("not_sent:"):
        if "HTTP 429" in reason:
            return "http_429"
        if "HTTP 418" in reason:
            return "http_418"
        return "not_sent"
    return "other"
