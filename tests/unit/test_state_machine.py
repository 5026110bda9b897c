import pytest

from worker.contract.enums import TERMINAL_STATUSES, OrderStatus
from worker.contract.state_machine import TRANSITIONS, IllegalTransition, check_transition

S = OrderStatus


def test_every_status_has_a_row_and_terminals_are_dead_ends() -> None:
    assert set(TRANSITIONS) == set(OrderStatus)
    for status in TERMINAL_STATUSES:
        assert TRANSITIONS[status] == frozenset()


def test_every_non_terminal_status_can_reach_a_terminal_one() -> None:
    for start in OrderStatus:
        seen, frontier = {start}, [start]
        while frontier:
            for nxt in TRANSITIONS[frontier.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    frontier.append(nxt)
        assert seen & TERMINAL_STATUSES, start


@pytest.mark.parametrize(
    ("current", "new"),
    [
        (S.PENDING_CANCEL, S.FILLED),  # the fill won the race against our cancel
        (S.PENDING_AMEND, S.PARTIALLY_FILLED),
        (S.SUBMITTED, S.FILLED),  # immediate fill, ack implied
        (S.PARTIALLY_FILLED, S.PARTIALLY_FILLED),
    ],
)
def test_venue_races_are_legal(current: OrderStatus, new: OrderStatus) -> None:
    assert check_transition("x", current, new) is new


@pytest.mark.parametrize(
    ("current", "new"),
    [(S.FILLED, S.CANCELED), (S.DENIED, S.SUBMITTED), (S.PENDING_NEW, S.FILLED), (S.CANCELED, S.ACCEPTED)],
)
def test_illegal_transitions_raise(current: OrderStatus, new: OrderStatus) -> None:
    with pytest.raises(IllegalTransition) as excinfo:
        check_transition("coid-1", current, new)
    assert "coid-1" in str(excinfo.value)
