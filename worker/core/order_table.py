"""Per-partition order table: a fold over the partition's own exec-events, with staging.

Changes made while a batch is processed are staged and become visible to later batches only
when the batch's Kafka transaction commits (`commit`); an aborted batch is dropped (`rollback`),
so re-processing it after an abort gives the same events again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from worker.contract.enums import OrderStatus
from worker.contract.events import ExecEvent
from worker.contract.state_machine import TRANSITIONS, check_transition, is_terminal

_S = OrderStatus
# Statuses only the venue can report: an order that reached one is known to the venue.
_VENUE_CONFIRMED = frozenset({_S.ACCEPTED, _S.PARTIALLY_FILLED, _S.FILLED, _S.CANCELED, _S.EXPIRED})


@dataclass(frozen=True, slots=True)
class OrderRecord:
    status: OrderStatus
    events: int  # how many exec-events this order has had; the next event's seq is events + 1
    last: ExecEvent  # the latest event, from which the next one is derived
    # The latest intent's request (live venues): every copy of it expires at `expires_ms` on the
    # venue's clock; `attempt` counts intents, so "resend at most N times" holds across restarts.
    expires_ms: int | None = None
    attempt: int = 0
    venue_confirmed: bool = False  # the venue has reported this order (it is not in flight)
    cancel_requested: bool = False  # a committed cancel intent, until the order is terminal

    @property
    def in_flight(self) -> bool:
        """Sent (or about to be), with no word from the venue: resolved only after `expires_ms`."""
        return not self.venue_confirmed and not is_terminal(self.status) and self.expires_ms is not None


class SettledOrders(Protocol):
    """Committed orders in a terminal status, held outside the table until one is read (the
    compiled history fold keeps a takeover's closed orders so: worker/core/history.py)."""

    def take(self, client_order_id: str) -> OrderRecord | None:
        """Removes the order and returns its record (None if not held)."""

    def discard(self, client_order_id: str) -> object:
        """Forgets the order (a newer record replaced it)."""

    def counts(self) -> dict[OrderStatus, int]: ...

    def ids(self) -> list[str]: ...

    def __len__(self) -> int: ...


class OrderTable:
    """Answers "have I seen this client_order_id, and where is it in its life?"."""

    def __init__(self) -> None:
        self._committed: dict[str, OrderRecord] = {}
        self._staged: dict[str, OrderRecord] = {}
        self._settled: SettledOrders | None = None  # disjoint from `_committed`

    def get(self, client_order_id: str) -> OrderRecord | None:
        record = self._staged.get(client_order_id)
        if record is not None:
            return record
        record = self._committed.get(client_order_id)
        if record is None and self._settled is not None:
            record = self._settled.take(client_order_id)
            if record is not None:
                self._committed[client_order_id] = record
        return record

    def apply(self, event: ExecEvent) -> OrderRecord:
        """Folds one event in, checking the transition table; raises `IllegalTransition`."""
        current = self.get(event.client_order_id)
        if current is None:
            # A first event implies the order was built (PENDING_NEW) and, unless a local gate
            # stopped it, sent (SUBMITTED): e.g. an immediate FILLED.
            if event.status not in TRANSITIONS[_S.PENDING_NEW]:
                check_transition(event.client_order_id, _S.PENDING_NEW, _S.SUBMITTED)
                if event.status is not _S.SUBMITTED:
                    check_transition(event.client_order_id, _S.SUBMITTED, event.status)
            record = OrderRecord(event.status, 1, event)
        else:
            check_transition(event.client_order_id, current.status, event.status)
            record = OrderRecord(
                event.status,
                current.events + 1,
                event,
                current.expires_ms,
                current.attempt,
                current.venue_confirmed,
                current.cancel_requested,
            )
        if event.status is _S.SUBMITTED and event.recv_window_ms is not None and event.sent_ts_ms is not None:
            # A new intent: a new request with its own expiry; the venue has not seen it yet.
            record = OrderRecord(
                record.status,
                record.events,
                event,
                event.sent_ts_ms + event.recv_window_ms,
                event.attempt or 1,
                False,
                record.cancel_requested,
            )
        elif event.status in _VENUE_CONFIRMED or event.exchange_order_id is not None:
            record = OrderRecord(
                record.status, record.events, event, record.expires_ms, record.attempt, True, record.cancel_requested
            )
        if event.status is _S.PENDING_CANCEL and not record.cancel_requested:
            record = OrderRecord(
                record.status, record.events, event, record.expires_ms, record.attempt, record.venue_confirmed, True
            )
        self._staged[event.client_order_id] = record
        return record

    def restore(self, records: dict[str, OrderRecord], settled: SettledOrders | None = None) -> None:
        """Committed records rebuilt by the compiled history fold (worker/core/history.py): the
        open ones as records, the settled ones (terminal, none of them in `records`) read on use."""
        assert self._settled is None, "restored once, into an empty table"
        self._committed.update(records)
        self._settled = settled

    def commit(self) -> None:
        settled = self._settled
        if settled is not None and len(settled):
            for client_order_id in self._staged:
                settled.discard(client_order_id)
        self._committed.update(self._staged)
        self._staged.clear()

    def rollback(self) -> None:
        self._staged.clear()

    def open_orders(self) -> list[OrderRecord]:
        """Orders not yet in a terminal state, in id order (stable for reconciliation)."""
        return sorted(
            (r for r in self._committed.values() if not is_terminal(r.status)),
            key=lambda r: r.last.client_order_id,
        )

    def by_status(self) -> dict[OrderStatus, int]:
        """How many committed orders are in each status (their latest)."""
        counts: dict[OrderStatus, int] = {} if self._settled is None else self._settled.counts()
        for record in self._committed.values():
            counts[record.status] = counts.get(record.status, 0) + 1
        return counts

    def records(self) -> dict[str, OrderRecord]:
        """Every committed record, the settled ones read (tests, diagnostics: not a hot path)."""
        if self._settled is not None:
            for client_order_id in self._settled.ids():
                self.get(client_order_id)
        return dict(self._committed)

    def __len__(self) -> int:
        return len(self._committed) + (0 if self._settled is None else len(self._settled))
