"""Per-partition order state: a fold over the partition's own exec-events, with staging.

Changes made while a batch is processed are staged and become visible to later batches only
when the batch's Kafka transaction commits (`commit`); an aborted batch is dropped (`rollback`),
so re-processing it after an abort gives the same events again.
"""

from __future__ import annotations

from dataclasses import dataclass

from worker.contract.enums import OrderStatus
from worker.contract.events import ExecEvent
from worker.contract.state_machine import TRANSITIONS, check_transition, is_terminal

_S = OrderStatus


@dataclass(frozen=True, slots=True)
class OrderRecord:
    status: OrderStatus
    events: int  # how many exec-events this order has had; the next event's seq is events + 1
    last: ExecEvent  # the latest event, from which the next one is derived


class OrderBook:
    """Answers "have I seen this client_order_id, and where is it in its life?"."""

    def __init__(self) -> None:
        self._committed: dict[str, OrderRecord] = {}
        self._staged: dict[str, OrderRecord] = {}

    def get(self, client_order_id: str) -> OrderRecord | None:
        record = self._staged.get(client_order_id)
        return record if record is not None else self._committed.get(client_order_id)

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
            record = OrderRecord(event.status, current.events + 1, event)
        self._staged[event.client_order_id] = record
        return record

    def commit(self) -> None:
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
        counts: dict[OrderStatus, int] = {}
        for record in self._committed.values():
            counts[record.status] = counts.get(record.status, 0) + 1
        return counts

    def __len__(self) -> int:
        return len(self._committed)
