"""The functional core: one decision in, its exec-events out.

decision -> round to the venue grid -> derive the client order id -> idempotency check ->
pre-trade gates -> executor -> exec-event, folded into the partition's `OrderBook`.
Everything but the executor call is pure; the executor is the only thing that differs between a
backtest and live trading.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from decimal import Decimal

from worker.contract.enums import Action, OrderStatus
from worker.contract.events import ExecEvent
from worker.contract.executor import IExecutor
from worker.contract.messages import Decision
from worker.contract.orders import ExecResult, OrderCtx, SourceRef
from worker.contract.state_machine import IllegalTransition, is_terminal
from worker.contract.trusted import trusted
from worker.execution.order_state import OrderBook
from worker.execution.slippage import slippage_bps
from worker.policy.clock import TimeProvider
from worker.policy.gating import GateOutcome
from worker.policy.ids import client_order_id, event_id
from worker.policy.modes import ModeSwitch
from worker.policy.pretrade import PreTradePolicy
from worker.policy.rounding import PriceRounding, RoundingError, align_order

_ZERO = Decimal(0)
log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class EngineConfig:
    rounding: PriceRounding = PriceRounding.PASSIVE


@dataclass(frozen=True, slots=True)
class CommandResult:
    """The events a command produced, or why it produced none (`dropped`)."""

    events: tuple[ExecEvent, ...] = ()
    # "duplicate", "unknown_target", "target_terminal", "unknown_outcome", "cancel_*", "amend_*"
    dropped: str | None = None


@dataclass(frozen=True, slots=True)
class Reconciled:
    events: tuple[ExecEvent, ...] = ()
    missing: bool = False  # the venue has no order with this id


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
        # Stamps intents (live only): how old an in-flight order is decides if it may be resent.
        self.clock = clock

    async def handle(self, book: OrderBook, decision: Decision, source: SourceRef) -> CommandResult:
        """Both phases at once: for executors without outside effects, and for tests."""
        prepared = self.prepare(book, decision, source)
        if not prepared.needs_executor:
            return CommandResult(prepared.events, prepared.dropped)
        sent = await self.send(book, prepared)
        return CommandResult(prepared.events + sent.events, sent.dropped)

    def prepare(self, book: OrderBook, decision: Decision, source: SourceRef) -> Prepared:
        """The pure phase: round, derive the id, check idempotency and gates; no executor call.

        For an executor with outside effects the order's SUBMITTED intent is part of the result,
        to be committed before `send` (see docs/architecture.md).
        """
        if decision.action is not Action.NEW:
            return self._prepare_change(book, decision)
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
            coid = client_order_id(decision.signal_row_id, decision.ts_ms, decision.side, decision.qty, decision.px)
            if book.get(coid) is not None:
                return Prepared(dropped="duplicate")
            mode = self.policy.modes.choose(decision.event_ts_ms)[0]
            event = self._unsent(decision, coid, source, OrderStatus.DENIED, exc.reason, mode)
            return Prepared(events=self._emit(book, event))

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
        order = trusted(
            OrderCtx,
            client_order_id=coid,
            signal_row_id=decision.signal_row_id,
            symbol=decision.symbol,
            side=decision.side,
            order_type=decision.order_type,
            tif=decision.tif,
            qty=rounded.qty,
            px=rounded.px,
            px_intent=decision.px,
            qty_intent=decision.qty,
            rounding_applied=rounded.rounding_applied,
            rounding_diff=rounded.rounding_diff,
            tick_size=decision.tick_size,
            step_size=decision.step_size,
            min_notional=decision.min_notional,
            costs_bps=decision.costs_bps,
            ts_ms=decision.ts_ms,
            event_ts_ms=decision.event_ts_ms,
            regime=decision.regime,
            scenario=decision.scenario,
            mode=mode,
            source=source,
        )
        if not self.executor.requires_intent:
            return Prepared(order=order)
        now = self.clock.now_ms() if self.clock is not None else None
        intent = trusted(ExecResult, status=OrderStatus.SUBMITTED, px_sent=order.px, sent_ts_ms=now)
        return Prepared(events=self._emit(book, self._sent(book, order, intent)), order=order)

    async def send(self, book: OrderBook, prepared: Prepared) -> CommandResult:
        """The effectful phase: hand the order (or change) to the executor, record its answer."""
        if prepared.order is not None:
            order = prepared.order
            result = await self.executor.submit(order)
            record = book.get(order.client_order_id)
            if result.status is OrderStatus.SUBMITTED and record is not None and record.status is result.status:
                return CommandResult(dropped="unknown_outcome")  # the intent stands; reconcile later
            return CommandResult(self._emit(book, self._sent(book, order, result)))
        if prepared.change is not None:
            return await self._send_change(book, prepared.change)
        return CommandResult(dropped=prepared.dropped)

    async def reconcile(self, book: OrderBook, client_order_id: str) -> Reconciled:
        """Asks the venue about an order that is not finished here; records any news.

        An order the venue does not have is reported as `missing` and left as it is: the caller
        decides whether it may be sent again (see `resend`) or must be given up (`give_up`).
        """
        record = book.get(client_order_id)
        if record is None or is_terminal(record.status):
            return Reconciled()
        venue = await self.executor.query(client_order_id, record.last.symbol)
        if venue is None:
            if record.status is not OrderStatus.SUBMITTED:
                log.error("order %s is %s here but unknown to the venue", client_order_id, record.status)
            return Reconciled(missing=True)
        return Reconciled(self.observe(book, client_order_id, venue))

    def observe(self, book: OrderBook, client_order_id: str, venue: ExecResult) -> tuple[ExecEvent, ...]:
        """Records what the venue says of an order it holds (a fill, an expiry), if it is news.

        For answers to a query (`reconcile`) and for fills a simulated venue reports as its
        market time advances (a resting order in a backtest).
        """
        record = book.get(client_order_id)
        if record is None or is_terminal(record.status):
            return ()
        last = record.last
        if venue.status is record.status and venue.qty_filled == last.qty_filled:
            return ()
        update: dict[str, object] = {
            "status": venue.status,
            "reason": venue.reason,
            "exchange_order_id": venue.exchange_order_id,
            "px_fill": venue.px_fill,
            "qty_filled": venue.qty_filled,
            "ack_ts_ms": venue.ack_ts_ms,
            "slippage_bps": slippage_bps(last.side, last.px_intent, venue.px_fill),
        }
        return self._follow_up(book, client_order_id, update)

    async def resend(self, book: OrderBook, decision: Decision, source: SourceRef) -> CommandResult:
        """Sends an in-flight order again, rebuilt from its source decision.

        Only for an order the venue has confirmed it does not have, once any request sent before
        a crash can no longer be accepted (the venue's recvWindow has passed).
        """
        rebuilt = self.prepare(OrderBook(), decision, source)
        record = book.get(rebuilt.order.client_order_id) if rebuilt.order is not None else None
        if rebuilt.order is None or record is None or record.status is not OrderStatus.SUBMITTED:
            return CommandResult(dropped="resend_source_mismatch")
        result = await self.executor.submit(rebuilt.order)
        if result.status is OrderStatus.SUBMITTED:
            return CommandResult(dropped="unknown_outcome")
        return CommandResult(self._emit(book, self._sent(book, rebuilt.order, result)))

    def give_up(self, book: OrderBook, client_order_id: str, reason: str) -> tuple[ExecEvent, ...]:
        """Ends an in-flight order that cannot be sent again (its source is gone)."""
        return self._follow_up(book, client_order_id, {"status": OrderStatus.REJECTED, "reason": reason})

    def _follow_up(self, book: OrderBook, client_order_id: str, update: dict[str, object]) -> tuple[ExecEvent, ...]:
        record = book.get(client_order_id)
        assert record is not None
        update["event_id"] = event_id(client_order_id, record.events + 1)
        try:
            return self._emit(book, record.last.model_copy(update=update))
        except IllegalTransition as exc:
            log.error("order %s: %s; venue state not applied", client_order_id, exc)
            return ()

    def _prepare_change(self, book: OrderBook, decision: Decision) -> Prepared:
        target = decision.target_client_order_id
        assert target is not None  # the Decision validator guarantees it for CANCEL/AMEND
        record = book.get(target)
        if record is None:
            return Prepared(dropped="unknown_target")
        if is_terminal(record.status):
            return Prepared(dropped="target_terminal")
        return Prepared(change=decision)

    async def _send_change(self, book: OrderBook, decision: Decision) -> CommandResult:
        target = decision.target_client_order_id
        assert target is not None
        record = book.get(target)
        if record is None or is_terminal(record.status):
            return CommandResult(dropped="target_terminal")
        update: dict[str, object]
        if decision.action is Action.CANCEL:
            cancel = await self.executor.cancel(target)
            if cancel.status is not OrderStatus.CANCELED:
                # Local state changes only on the venue's acknowledgement.
                return CommandResult(dropped=f"cancel_{cancel.reason or cancel.status.lower()}")
            update = {
                "status": OrderStatus.CANCELED,
                "reason": "cancel_requested",
                "ack_ts_ms": cancel.ack_ts_ms,
            }
        else:
            amend = await self.executor.amend(target, decision.new_px, decision.new_qty)
            if amend.status is OrderStatus.REJECTED:
                return CommandResult(dropped=f"amend_{amend.reason or 'rejected'}")
            update = {
                "status": amend.status,
                "reason": "amended",
                "ack_ts_ms": amend.ack_ts_ms,
                "px_sent": amend.px or record.last.px_sent,
                "qty": amend.qty or record.last.qty,
            }
        update["event_id"] = event_id(target, record.events + 1)
        update["event_ts_ms"] = decision.event_ts_ms
        return CommandResult(self._emit(book, record.last.model_copy(update=update)))

    def _emit(self, book: OrderBook, event: ExecEvent) -> tuple[ExecEvent, ...]:
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
        return trusted(
            ExecEvent,
            event_id=event_id(coid, 1),
            client_order_id=coid,
            signal_row_id=decision.signal_row_id,
            symbol=decision.symbol,
            side=decision.side,
            qty=decision.qty,
            px_intent=decision.px,
            px_sent=None,
            px_fill=None,
            qty_filled=_ZERO,
            rounding_applied=False,
            rounding_diff=_ZERO,
            slippage_bps=None,
            exchange_order_id=None,
            status=status,
            reason=reason,
            sent_ts_ms=None,
            ack_ts_ms=None,
            event_ts_ms=decision.event_ts_ms,
            latency_ms=None,
            executor=self.executor.name,
            mode=mode,
            scenario=decision.scenario,
            source=source,
        )

    def _sent(self, book: OrderBook, order: OrderCtx, result: ExecResult) -> ExecEvent:
        # Slippage is measured against the upstream intent, so the rounding move is included.
        record = book.get(order.client_order_id)
        return trusted(
            ExecEvent,
            event_id=event_id(order.client_order_id, record.events + 1 if record else 1),
            client_order_id=order.client_order_id,
            signal_row_id=order.signal_row_id,
            symbol=order.symbol,
            side=order.side,
            qty=order.qty,
            px_intent=order.px_intent,
            px_sent=result.px_sent if result.px_sent is not None else order.px,
            px_fill=result.px_fill,
            qty_filled=result.qty_filled,
            rounding_applied=order.rounding_applied,
            rounding_diff=order.rounding_diff,
            slippage_bps=slippage_bps(order.side, order.px_intent, result.px_fill),
            exchange_order_id=result.exchange_order_id,
            status=result.status,
            reason=result.reason,
            sent_ts_ms=result.sent_ts_ms,
            ack_ts_ms=result.ack_ts_ms,
            event_ts_ms=order.event_ts_ms,
            latency_ms=result.latency_ms,
            executor=self.executor.name,
            mode=order.mode,
            scenario=order.scenario,
            source=order.source,
        )
