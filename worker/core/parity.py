"""Shadow parity: does the shadow's answer to an order agree with the primary's? Pure, no I/O.

Compared per order, on the first answer of each side (the event after the intent on a venue):

  * `intent_price`: the price each side sent (`px_sent`);
  * `status`: the status of the first answer (FILLED, ACCEPTED, EXPIRED, REJECTED, UNKNOWN, ...);
  * `reason`: when both rejected, the reason's class (`venue:-2010:...` -> `venue:-2010`,
    `not_sent: HTTP 429` -> `not_sent`, a plain reason as it is);
  * `fill_price`: when both report a fill price, within one tick of the symbol's grid;
  * `unavailable`: the shadow gave no answer: its venue down or the request not sent (an
    exception, `not_sent:...`, `venue_banned`, UNKNOWN), or the time budget spent.

An order matches when no field differs. `ParityWindow` keeps the last N compared orders
(`PARITY_WINDOW`) and gives the share that matched: the `executor_shadow_parity_ratio` gauge.
"""

from __future__ import annotations

from collections import deque
from decimal import Decimal
from enum import StrEnum

from worker.contract.enums import OrderStatus
from worker.contract.events import ExecEvent

# The parity gauge covers the last 1,000 compared orders: at 100 orders/s that is the last ten
# seconds, and one mismatch moves it by 0.1% (below the 1% the alert allows).
PARITY_WINDOW = 1_000
# Reasons of a shadow venue's answer that mean it was never asked or never answered.
_NO_ANSWER = frozenset({"not_sent", "venue_banned", "expired_before_send"})


class ParityField(StrEnum):
    """The bounded `field` label of `executor_shadow_mismatch_total`."""

    INTENT_PRICE = "intent_price"
    STATUS = "status"
    REASON = "reason"
    FILL_PRICE = "fill_price"
    UNAVAILABLE = "unavailable"


def reason_class(reason: str | None) -> str:
    """A reason without its free text: `venue:CODE`, or the part before the first `:`."""
    if not reason:
        return ""
    head, _, rest = reason.partition(":")
    if head == "venue":
        return f"venue:{rest.partition(':')[0]}"
    return head.strip()


def compare(primary: ExecEvent, shadow: ExecEvent | None, tick: Decimal) -> tuple[ParityField, ...]:
    """The fields on which the shadow's answer differs from the primary's (empty: a match)."""
    if shadow is None or shadow.status is OrderStatus.UNKNOWN or reason_class(shadow.reason) in _NO_ANSWER:
        return (ParityField.UNAVAILABLE,)
    fields: list[ParityField] = []
    if primary.px_sent != shadow.px_sent:
        fields.append(ParityField.INTENT_PRICE)
    if primary.status is not shadow.status:
        fields.append(ParityField.STATUS)
    elif primary.status is OrderStatus.REJECTED and reason_class(primary.reason) != reason_class(shadow.reason):
        fields.append(ParityField.REASON)
    if primary.px_fill is not None and shadow.px_fill is not None and abs(primary.px_fill - shadow.px_fill) > tick:
        fields.append(ParityField.FILL_PRICE)
    return tuple(fields)


class ParityWindow:
    """Match or mismatch of the last `size` compared orders; `ratio` is the share that matched."""

    def __init__(self, size: int = PARITY_WINDOW) -> None:
        if size < 1:
            raise ValueError("the parity window holds at least one order")
        self._last: deque[bool] = deque(maxlen=size)
        self._matched = 0

    def add(self, matched: bool) -> None:
        if len(self._last) == self._last.maxlen and self._last[0]:
            self._matched -= 1
        self._last.append(matched)
        self._matched += matched

    @property
    def compared(self) -> int:
        return len(self._last)

    def ratio(self) -> float:
        """1.0 before the first comparison: no evidence of a difference yet."""
        return self._matched / len(self._last) if self._last else 1.0
