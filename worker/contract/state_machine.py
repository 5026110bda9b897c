"""The order state machine: one explicit transition table, checked on every change.

Modelled on the way venues really behave (and NautilusTrader's table): a fill may arrive while a
cancel or an amend is in flight, and a cancel request may lose the race to the final fill. Any
pair not in the table is an error (`IllegalTransition`), never applied silently.

    PENDING_NEW --submit--> SUBMITTED --ack--> ACCEPTED --fill--> PARTIALLY_FILLED --fill--> FILLED
         |                    |    ^            |  \\__cancel__> PENDING_CANCEL --ack--> CANCELED
         +--gate--> DENIED    |    |            |   \\__amend__> PENDING_AMEND --ack--> ACCEPTED
         +--rate--> THROTTLED |  resend         +--nack--> REJECTED, +--fill--> FILLED (ack implied)
                              v    |
                             UNKNOWN --query after expiry--> the venue's state (or a resend)

SUBMITTED -> SUBMITTED and UNKNOWN -> SUBMITTED are resends: a new intent with a new request
expiry, allowed only once the venue has confirmed, after every copy of the previous request
expired, that it does not have the order (docs/guarantees.md).
"""

from __future__ import annotations

from worker.contract.enums import TERMINAL_STATUSES, OrderStatus

S = OrderStatus

TRANSITIONS: dict[OrderStatus, frozenset[OrderStatus]] = {
    S.PENDING_NEW: frozenset({S.SUBMITTED, S.DENIED, S.THROTTLED}),
    S.SUBMITTED: frozenset(
        {S.SUBMITTED, S.UNKNOWN, S.ACCEPTED, S.REJECTED, S.PARTIALLY_FILLED, S.FILLED, S.EXPIRED, S.CANCELED}
        | {S.PENDING_CANCEL}
    ),
    S.UNKNOWN: frozenset(
        {S.UNKNOWN, S.SUBMITTED, S.ACCEPTED, S.REJECTED, S.PARTIALLY_FILLED, S.FILLED, S.EXPIRED, S.CANCELED}
        | {S.PENDING_CANCEL}
    ),
    # ACCEPTED -> ACCEPTED: an event that changes nothing but says why (an amend refused).
    S.ACCEPTED: frozenset(
        {S.ACCEPTED, S.PARTIALLY_FILLED, S.FILLED, S.PENDING_CANCEL, S.PENDING_AMEND, S.CANCELED, S.EXPIRED}
    ),
    S.PARTIALLY_FILLED: frozenset(
        {S.PARTIALLY_FILLED, S.FILLED, S.PENDING_CANCEL, S.PENDING_AMEND, S.CANCELED, S.EXPIRED}
    ),
    # In flight: the venue may still fill the order before it handles the request.
    # PENDING_CANCEL -> PENDING_CANCEL records a refused cancel with the venue's reason (it is
    # retried until the venue confirms or the order ends); -> REJECTED when the venue refused
    # the order itself.
    S.PENDING_CANCEL: frozenset(
        {S.CANCELED, S.PARTIALLY_FILLED, S.FILLED, S.ACCEPTED, S.EXPIRED, S.REJECTED, S.PENDING_CANCEL}
    ),
    S.PENDING_AMEND: frozenset({S.ACCEPTED, S.PARTIALLY_FILLED, S.FILLED, S.CANCELED, S.EXPIRED, S.PENDING_CANCEL}),
}
# Terminal states have no way out.
for _terminal in TERMINAL_STATUSES:
    TRANSITIONS[_terminal] = frozenset()


class IllegalTransition(ValueError):
    """An order was asked to move between two states that the table does not connect."""

    def __init__(self, client_order_id: str, current: OrderStatus, new: OrderStatus) -> None:
        super().__init__(f"order {client_order_id}: illegal transition {current} -> {new}")
        self.client_order_id = client_order_id
        self.current = current
        self.new = new


def check_transition(client_order_id: str, current: OrderStatus, new: OrderStatus) -> OrderStatus:
    """Returns `new` if the table allows `current -> new`, raises `IllegalTransition` otherwise."""
    if new not in TRANSITIONS[current]:
        raise IllegalTransition(client_order_id, current, new)
    return new


def is_terminal(status: OrderStatus) -> bool:
    return status in TERMINAL_STATUSES
