"""The functional core: one decision in, its exec-events out.

decision -> round to the venue grid -> derive the client order id -> idempotency check ->
pre-trade gates -> executor -> exec-event, folded into the partition's `OrderTable`.
Everything but the executor call is pure; the executor is the only thing that differs between a
backtest and live trading.

With a venue (`executor.requires_intent`), every request that can change an order is first an
intent event, committed before it is sent: SUBMITTED (with the request's timestamp and
recvWindow, so its copies expire at a known venue time) and PENDING_CANCEL. What happens after a
send whose outcome is unknown is decided here too (`resolve_in_flight`): nothing until every copy
has expired, then the venue's answer, a resend as a new intent, or giving up (docs/guarantees.md).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal

from worker.contract.enums import Action, OrderStatus
from worker.contract.events import ExecEvent
from worker.contract.executor import IExecutor
from worker.contract.messages import Decision
from worker.contract.orders import AmendResult, CancelResult, ExecResult, OrderCtx, SourceRef
from worker.contract.state_machine import IllegalTransition, is_terminal
from worker.contract.trusted import trusted, trusted_fields
from worker.core.order_table import OrderTable
from worker.core.slippage import slippage_bps
from worker.core.venue_filters import GridPolicy, check_decision
from worker.policy.clock import TimeProvider
from worker.policy.gating import GateOutcome
from worker.policy.ids import client_order_id, event_id
from worker.policy.modes import ModeSwitch
from worker.policy.pretrade import PreTradePolicy
from worker.policy.rounding import PriceRounding, RoundingError, align_order

_ZERO = Decimal(0)
# An event that records no venue request (backtests, denials): its intent fields stay unset.
_NO_REQUEST = {"recv_window_ms": None, "attempt": None, "order_type": None, "tif": None}
# Binance's default recvWindow; a venue executor may set its own (`recv_window_ms`).
DEFAULT_RECV_WINDOW_MS = 5_000
log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class EngineConfig:
    rounding: PriceRounding = PriceRounding.PASSIVE
    # Intents per order: the first send and at most two resends, each only after the venue
    # confirmed (after every copy expired) that it does not have the order.
    max_attempts: int = 3
    # A live venue's own grid (exchangeInfo filters) against each decision's: deny a mismatch,
    # or move the decision onto the venue's grid; None trusts the decision (backtests).
    venue_grid: GridPolicy | None = None


@dataclass(frozen=True, slots=True)
class CommandResult:
    """The events a command produced, or why it produced none (`dropped`)."""

    events: tuple[ExecEvent, ...] = ()
    # "duplicate", "unknown_target", "target_terminal", "unknown_outcome", "cancel_*", "amend_*"
    dropped: str | None = None
    round_trip_ms: int | None = None  # a live venue's answer time for a new order, without backoff


@dataclass(frozen=True, slots=True)
class Resolution:
    """What an in-flight order's query led to: news, and possibly a new intent to send."""

    events: tuple[ExecEvent, ...] = ()
    resend: OrderCtx | None = None


@dataclass(frozen=True, slots=True)
class Prepared:
    """A command after the pure part: events decided already, and what is left to send."""

    events: tuple[ExecEvent, ...] = ()  # a deny/throttle, or the SUBMITTED intent of `order`
    order: OrderCtx | None = None  # a new order for the executor
    change: Decision | None = None  # a CANCEL or AMEND for the executor
    dropped: str | None = None

    @property
    def needs_executor(self) -> bool:
        return self.order is not None or self.change is not None


class ExecutionEngine:
    def __init__(
        self,
        executor: IExecutor,
        config: EngineConfig | None = None,
        clock: TimeProvider | None = None,
        policy: PreTradePolicy | None = None,
    ) -> None:
        self.executor = executor
        self.config = config or EngineConfig()
        self.policy = policy or PreTradePolicy.default()
        # Mode changes seen while preparing commands; the runtime drains them into the audit log.
        self.mode_switches: list[ModeSwitch] = []
        # Stamps intents (live only) with the venue's clock: every request's expiry is on it.
        self.clock = clock if clock is not None else getattr(executor, "clock", None)

    def prepare(self, book: OrderTable, decision: Decision, source: SourceRef) -> Prepared:
        """The pure phase: round, derive the id, check idempotency and gates; no executor call.

        For an executor with outside effects the order's SUBMITTED intent is part of the result,
        to be committed before `send` (see docs/architecture.md).
        """
        if decision.action is not Action.NEW:
            return self._prepare_change(book, decision, source)
        filters = getattr(self.executor, "venue_filters", None) if self.config.venue_grid else None
        if filters is not None and self.config.venue_grid is not None:
            grid = check_decision(decision, filters, self.config.venue_grid)
            if grid.reason is not None:
                return self._deny_unrounded(book, decision, source, grid.reason)
            decision = grid.decision
        try:
            rounded = align_order(
                decision.side,
                decision.qty,
                decision.px,
                decision.tick_size,
                decision.step_size,
                decision.min_notional,
                self.config.rounding,
            )
        except RoundingError as exc:
            return self._deny_unrounded(book, decision, source, exc.reason)

        coid = client_order_id(decision.signal_row_id, decision.ts_ms, decision.side, rounded.qty, rounded.px)
        if book.get(coid) is not None:
            return Prepared(dropped="duplicate")

        verdict = self.policy.check(decision, coid)
        if verdict.switch is not None:
            self.mode_switches.append(verdict.switch)
        mode = verdict.mode
        if verdict.gate.outcome is not GateOutcome.PASS:
            status = OrderStatus.DENIED if verdict.gate.outcome is GateOutcome.DENY else OrderStatus.THROTTLED
            event = self._unsent(decision, coid, source, status, verdict.gate.reason, mode)
            return Prepared(events=self._emit(book, event))

        # Built from validated values with exact arithmetic: not validated again (contract.trusted).
        order = trusted_fields(
            OrderCtx,
            {
                "client_order_id": coid,
                "signal_row_id": decision.signal_row_id,
                "symbol": decision.symbol,
                "side": decision.side,
                "order_type": decision.order_type,
                "tif": decision.tif,
                "qty": rounded.qty,
                "px": rounded.px,
                "px_intent": decision.px,
                "qty_intent": decision.qty,
                "rounding_applied": rounded.rounding_applied,
                "rounding_diff": rounded.rounding_diff,
                "tick_size": decision.tick_size,
                "step_size": decision.step_size,
                "min_notional": decision.min_notional,
                "costs_bps": decision.costs_bps,
                "ts_ms": decision.ts_ms,
                "event_ts_ms": decision.event_ts_ms,
                "regime": decision.regime,
                "scenario": decision.scenario,
                "mode": mode,
                "source": source,
                "sent_ts_ms": None,
                "recv_window_ms": None,
                "attempt": 1,
                # Rules in `observe` that would have stopped it.
                "observed": verdict.gate.observed or None,
            },
        )
        if not self.executor.requires_intent:
            return Prepared(order=order)
        order = self._stamped(order, attempt=1)
        intent = trusted(ExecResult, status=OrderStatus.SUBMITTED, px_sent=order.px, sent_ts_ms=order.sent_ts_ms)
        return Prepared(events=self._emit(book, self._intent(self._sent(book, order, intent), order)), order=order)

    def _deny_unrounded(self, book: OrderTable, decision: Decision, source: SourceRef, reason: str) -> Prepared:
        """DENIED before rounding (off the grid, or the venue's grid refuses it): the id is derived
        from the decision as given."""
        coid = client_order_id(decision.signal_row_id, decision.ts_ms, decision.side, decision.qty, decision.px)
        if book.get(coid) is not None:
            return Prepared(dropped="duplicate")
        mode = self.policy.modes.choose(decision.event_ts_ms)[0]
        event = self._unsent(decision, coid, source, OrderStatus.DENIED, reason, mode)
        return Prepared(events=self._emit(book, event))

    def _stamped(self, order: OrderCtx, attempt: int) -> OrderCtx:
        """The order with its request fixed: timestamp (venue clock) and recvWindow."""
        assert self.clock is not None, "a venue executor needs the venue's clock to stamp intents"
        window = getattr(self.executor, "recv_window_ms", None) or DEFAULT_RECV_WINDOW_MS
        request = {"sent_ts_ms": self.clock.now_ms(), "recv_window_ms": window, "attempt": attempt}
        return order.model_copy(update=request)

    @staticmethod
    def _intent(event: ExecEvent, order: OrderCtx) -> ExecEvent:
        """An intent event records the whole request, so that it can be resent from the event."""
        request = {
            "recv_window_ms": order.recv_window_ms,
            "attempt": order.attempt,
            "order_type": order.order_type,
            "tif": order.tif,
        }
        return event.model_copy(update=request)

    def submitted(self, book: OrderTable, order: OrderCtx, result: ExecResult) -> tuple[ExecEvent, ...]:
        """The executor's answer to a new order: its first event (a backtest), or the answer to
        its committed intent (a venue)."""
        if not self.executor.requires_intent:
            return self._emit(book, self._sent(book, order, result))
        return self.answer(book, order.client_order_id, result)

    def answer(self, book: OrderTable, client_order_id: str, result: ExecResult) -> tuple[ExecEvent, ...]:
        """Records a venue's answer to an intent (or UNKNOWN when there was none)."""
        record = book.get(client_order_id)
        if record is None or is_terminal(record.status):
            return ()
        if result.status is OrderStatus.UNKNOWN and record.status is not OrderStatus.SUBMITTED:
            return ()  # already unknown, or a cancel is pending: nothing new to say
        sent = record.last.sent_ts_ms
        # UNKNOWN is the absence of an answer: it carries no acknowledgement time and no latency.
        ack = result.ack_ts_ms if result.status is not OrderStatus.UNKNOWN else None
        update: dict[str, object] = {
            "status": result.status,
            "reason": result.reason,
            "exchange_order_id": result.exchange_order_id,
            "px_fill": result.px_fill,
            "qty_filled": result.qty_filled,
            "ack_ts_ms": ack,
            "latency_ms": ack - sent if ack is not None and sent is not None else None,
            "slippage_bps": slippage_bps(record.last.side, record.last.px_intent, result.px_fill),
        }
        if result.px_sent is not None:
            update["px_sent"] = result.px_sent
        return self._follow_up(book, client_order_id, update)

    def observe(self, book: OrderTable, client_order_id: str, venue: ExecResult) -> tuple[ExecEvent, ...]:
        """Records what the venue says of an order it holds (a fill, an expiry), if it is news.

        For answers to a query (`reconcile`) and for fills a simulated venue reports as its
        market time advances (a resting order in a backtest).
        """
        record = book.get(client_order_id)
        if record is None or is_terminal(record.status):
            return ()
        last = record.last
        status = venue.status
        if status is OrderStatus.ACCEPTED and record.status is OrderStatus.PENDING_CANCEL:
            status = record.status  # still resting while our cancel is pending: no news
        unchanged = status is record.status and venue.qty_filled == last.qty_filled
        if status is OrderStatus.UNKNOWN or (unchanged and record.venue_confirmed):
            return ()
        update: dict[str, object] = {
            "status": status,
            "reason": venue.reason,
            "exchange_order_id": venue.exchange_order_id,
            "px_fill": venue.px_fill,
            "qty_filled": venue.qty_filled,
            "ack_ts_ms": venue.ack_ts_ms,
            "slippage_bps": slippage_bps(last.side, last.px_intent, venue.px_fill),
        }
        if self.executor.requires_intent:
            sent, ack = last.sent_ts_ms, venue.ack_ts_ms
            update["latency_ms"] = ack - sent if ack is not None and sent is not None else None
        return self._follow_up(book, client_order_id, update)

    def resolve_in_flight(self, book: OrderTable, client_order_id: str, venue: ExecResult | None) -> Resolution:
        """An in-flight order after every copy of its request expired, given the venue's answer.

        The caller queries only once `record.expires_ms` has certainly passed on the venue's
        clock: from then on no copy of any earlier request can be accepted, so "the venue does
        not have it" is final. Then: the venue's state if it has the order; CANCELED if a cancel
        was asked for meanwhile; else a resend as a new intent (new timestamp, attempt + 1), at
        most `max_attempts` intents in all; else REJECTED.
        """
        record = book.get(client_order_id)
        if record is None or not record.in_flight:
            return Resolution()
        if venue is not None:
            return Resolution(self.observe(book, client_order_id, venue))
        if record.cancel_requested:
            ended = {"status": OrderStatus.CANCELED, "reason": "canceled_before_venue"}
            return Resolution(self._follow_up(book, client_order_id, ended))
        if record.attempt >= self.config.max_attempts:
            reason = f"not_at_venue_after_{record.attempt}_attempts"
            gone = {"status": OrderStatus.REJECTED, "reason": reason}
            return Resolution(self._follow_up(book, client_order_id, gone))
        order = self._stamped(_order_from_intent(record.last), attempt=record.attempt + 1)
        update: dict[str, object] = {
            "status": OrderStatus.SUBMITTED,
            "reason": "resend",
            "exchange_order_id": None,
            "px_fill": None,
            "qty_filled": _ZERO,
            "slippage_bps": None,
            "sent_ts_ms": order.sent_ts_ms,
            "ack_ts_ms": None,
            "latency_ms": None,
            "recv_window_ms": order.recv_window_ms,
            "attempt": order.attempt,
        }
        return Resolution(self._follow_up(book, client_order_id, update), order)

    def give_up(self, book: OrderTable, client_order_id: str, reason: str) -> tuple[ExecEvent, ...]:
        """Ends an in-flight order that cannot be sent again (its source is gone)."""
        return self._follow_up(book, client_order_id, {"status": OrderStatus.REJECTED, "reason": reason})

    def _follow_up(self, book: OrderTable, client_order_id: str, update: Mapping[str, object]) -> tuple[ExecEvent, ...]:
        record = book.get(client_order_id)
        assert record is not None
        update = {**update, "event_id": event_id(client_order_id, record.events + 1)}
        _keep_latency(record.last, update)
        try:
            return self._emit(book, record.last.model_copy(update=update))
        except IllegalTransition as exc:
            log.error("order %s: %s; venue state not applied", client_order_id, exc)
            return ()

    def _prepare_change(self, book: OrderTable, decision: Decision, source: SourceRef) -> Prepared:
        target = decision.target_client_order_id
        assert target is not None  # the Decision validator guarantees it for CANCEL/AMEND
        record = book.get(target)
        if record is None:
            return Prepared(dropped="unknown_target")
        if is_terminal(record.status):
            return Prepared(dropped="target_terminal")
        if not self.executor.requires_intent:
            return Prepared(change=decision)
        if decision.action is Action.AMEND and not getattr(self.executor, "supports_amend", False):
            # Refused with an event, never silently: the order itself goes on unchanged.
            note = {"reason": "amend_refused:amend_unsupported", "event_ts_ms": decision.event_ts_ms}
            return Prepared(events=self._follow_up(book, target, {"status": record.status, **note}))
        if decision.action is Action.CANCEL:
            if record.cancel_requested:
                return Prepared(dropped="cancel_pending")
            # The cancel is a committed intent: a crash before the DELETE, or a DELETE that gets
            # no answer, is retried by reconciliation until the venue confirms or the order ends.
            intent = {
                "status": OrderStatus.PENDING_CANCEL,
                "reason": "cancel_requested",
                "event_ts_ms": decision.event_ts_ms,
            }
            return Prepared(events=self._follow_up(book, target, intent), change=decision)
        return Prepared(change=decision)

    def cancel_answered(self, book: OrderTable, client_order_id: str, result: CancelResult) -> tuple[ExecEvent, ...]:
        """The venue's answer to the DELETE of a committed cancel intent.

        CANCELED ends the order; a refusal is recorded with the venue's reason (the order's own
        final state follows from reconciliation); no answer leaves the intent pending, retried.
        """
        record = book.get(client_order_id)
        if record is None or is_terminal(record.status) or not record.cancel_requested:
            return ()
        if result.status is OrderStatus.CANCELED:
            done = {"status": OrderStatus.CANCELED, "reason": "canceled", "ack_ts_ms": result.ack_ts_ms}
            return self._follow_up(book, client_order_id, done)
        if result.status is OrderStatus.REJECTED and record.status is OrderStatus.PENDING_CANCEL:
            refused: dict[str, object] = {
                "status": OrderStatus.PENDING_CANCEL,
                "reason": f"cancel_refused:{result.reason}",
                "ack_ts_ms": result.ack_ts_ms,
            }
            return self._follow_up(book, client_order_id, refused)
        return ()

    def change_answered(
        self, book: OrderTable, decision: Decision, result: CancelResult | AmendResult
    ) -> CommandResult:
        """A simulated venue's answer to a CANCEL or AMEND (a live venue's cancel goes through a
        committed intent, `cancel_answered`). Local state changes only on an acknowledgement."""
        target = decision.target_client_order_id
        assert target is not None
        record = book.get(target)
        if record is None or is_terminal(record.status):
            return CommandResult(dropped="target_terminal")
        update: dict[str, object]
        if isinstance(result, CancelResult):
            if result.status is not OrderStatus.CANCELED:
                return CommandResult(dropped=f"cancel_{result.reason or result.status.lower()}")
            update = {"status": OrderStatus.CANCELED, "reason": "cancel_requested", "ack_ts_ms": result.ack_ts_ms}
        else:
            if result.status is OrderStatus.REJECTED:
                return CommandResult(dropped=f"amend_{result.reason or 'rejected'}")
            update = {
                "status": result.status,
                "reason": "amended",
                "ack_ts_ms": result.ack_ts_ms,
                "px_sent": result.px or record.last.px_sent,
                "qty": result.qty or record.last.qty,
            }
        update["event_id"] = event_id(target, record.events + 1)
        update["event_ts_ms"] = decision.event_ts_ms
        _keep_latency(record.last, update)
        return CommandResult(self._emit(book, record.last.model_copy(update=update)))

    def _emit(self, book: OrderTable, event: ExecEvent) -> tuple[ExecEvent, ...]:
        book.apply(event)
        return (event,)

    def _unsent(
        self,
        decision: Decision,
        coid: str,
        source: SourceRef,
        status: OrderStatus,
        reason: str | None,
        mode: str,
    ) -> ExecEvent:
        return trusted_fields(
            ExecEvent,
            {
                "event_id": event_id(coid, 1),
                "client_order_id": coid,
                "signal_row_id": decision.signal_row_id,
                "symbol": decision.symbol,
                "side": decision.side,
                "qty": decision.qty,
                "px_intent": decision.px,
                "px_sent": None,
                "px_fill": None,
                "qty_filled": _ZERO,
                "rounding_applied": False,
                "rounding_diff": _ZERO,
                "slippage_bps": None,
                "exchange_order_id": None,
                "status": status,
                "reason": reason,
                "sent_ts_ms": None,
                "ack_ts_ms": None,
                "event_ts_ms": decision.event_ts_ms,
                "latency_ms": None,
                "executor": self.executor.name,
                "mode": mode,
                "scenario": decision.scenario,
                "source": source,
                **_NO_REQUEST,
                "observed": None,
            },
        )

    def _sent(self, book: OrderTable, order: OrderCtx, result: ExecResult) -> ExecEvent:
        # Slippage is measured against the upstream intent, so the rounding move is included.
        record = book.get(order.client_order_id)
        px_fill = result.px_fill
        sent, ack = result.sent_ts_ms, result.ack_ts_ms
        return trusted_fields(
            ExecEvent,
            {
                "event_id": event_id(order.client_order_id, record.events + 1 if record else 1),
                "client_order_id": order.client_order_id,
                "signal_row_id": order.signal_row_id,
                "symbol": order.symbol,
                "side": order.side,
                "qty": order.qty,
                "px_intent": order.px_intent,
                "px_sent": result.px_sent if result.px_sent is not None else order.px,
                "px_fill": px_fill,
                "qty_filled": result.qty_filled,
                "rounding_applied": order.rounding_applied,
                "rounding_diff": order.rounding_diff,
                "slippage_bps": None if px_fill is None else slippage_bps(order.side, order.px_intent, px_fill),
                "exchange_order_id": result.exchange_order_id,
                "status": result.status,
                "reason": result.reason,
                "sent_ts_ms": sent,
                "ack_ts_ms": ack,
                "event_ts_ms": order.event_ts_ms,
                "latency_ms": None if sent is None or ack is None else ack - sent,
                "executor": self.executor.name,
                "mode": order.mode,
                "scenario": order.scenario,
                "source": order.source,
                **_NO_REQUEST,
                "observed": order.observed,
            },
        )


def _order_from_intent(intent: ExecEvent) -> OrderCtx:
    """The order an intent event describes, for a resend: every field a venue request needs.

    The grid and cost fields are not part of the event (and not part of a request); a resend is
    never rounded or gated again, so they are unused and left at their neutral values.
    """
    assert intent.order_type is not None and intent.tif is not None, "an intent records its request"
    return trusted(
        OrderCtx,
        client_order_id=intent.client_order_id,
        signal_row_id=intent.signal_row_id,
        symbol=intent.symbol,
        side=intent.side,
        order_type=intent.order_type,
        tif=intent.tif,
        qty=intent.qty,
        px=intent.px_sent,
        px_intent=intent.px_intent,
        qty_intent=intent.qty,
        rounding_applied=intent.rounding_applied,
        rounding_diff=intent.rounding_diff,
        tick_size=_UNRECORDED,
        step_size=_UNRECORDED,
        min_notional=_ZERO,
        costs_bps=_ZERO,
        ts_ms=intent.event_ts_ms,
        event_ts_ms=intent.event_ts_ms,
        regime="",
        scenario=intent.scenario,
        mode=intent.mode,
        source=intent.source,
        observed=intent.observed,
    )


_UNRECORDED = Decimal(1)


def _keep_latency(last: ExecEvent, update: dict[str, object]) -> None:
    """A follow-up event copies its predecessor: keep `latency_ms == ack_ts_ms - sent_ts_ms` on
    every event that carries both (a fill or cancel answered later has a later ack)."""
    sent = update.get("sent_ts_ms", last.sent_ts_ms)
    ack = update.get("ack_ts_ms", last.ack_ts_ms)
    update["latency_ms"] = ack - sent if isinstance(sent, int) and isinstance(ack, int) else None
