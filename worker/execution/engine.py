"""The functional core: one decision in, its exec-events out.

decision -> round to the venue grid -> derive the client order id -> idempotency check ->
pre-trade gates -> executor -> exec-event, folded into the partition's `OrderBook`.
Everything but the executor call is pure; the executor is the only thing that differs between a
backtest and live trading.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from worker.contract.enums import Action, OrderStatus
from worker.contract.events import ExecEvent
from worker.contract.executor import IExecutor
from worker.contract.messages import Decision
from worker.contract.orders import ExecResult, OrderCtx, SourceRef
from worker.contract.state_machine import is_terminal
from worker.execution.order_state import OrderBook
from worker.execution.slippage import slippage_bps
from worker.policy.gating import GateOutcome, GatePolicy, pre_trade_gate
from worker.policy.ids import client_order_id, event_id
from worker.policy.rounding import PriceRounding, RoundingError, align_order

_ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class EngineConfig:
    gate: GatePolicy = field(default_factory=GatePolicy)
    rounding: PriceRounding = PriceRounding.PASSIVE
    mode: str = "default"


@dataclass(frozen=True, slots=True)
class CommandResult:
    """The events a command produced, or why it produced none (`dropped`)."""

    events: tuple[ExecEvent, ...] = ()
    dropped: str | None = None  # "duplicate", "unknown_target", "target_terminal"


class ExecutionEngine:
    def __init__(self, executor: IExecutor, config: EngineConfig | None = None) -> None:
        self.executor = executor
        self.config = config or EngineConfig()

    async def handle(self, book: OrderBook, decision: Decision, source: SourceRef) -> CommandResult:
        if decision.action is Action.NEW:
            return await self._new_order(book, decision, source)
        return await self._change_order(book, decision)

    async def _new_order(self, book: OrderBook, decision: Decision, source: SourceRef) -> CommandResult:
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
            coid = client_order_id(
                decision.signal_row_id, decision.ts_ms, decision.side, decision.qty, decision.px
            )
            if book.get(coid) is not None:
                return CommandResult(dropped="duplicate")
            return self._emit(book, self._unsent(decision, coid, source, OrderStatus.DENIED, exc.reason))

        coid = client_order_id(decision.signal_row_id, decision.ts_ms, decision.side, rounded.qty, rounded.px)
        if book.get(coid) is not None:
            return CommandResult(dropped="duplicate")

        verdict = pre_trade_gate(decision, coid, self.config.gate)
        if verdict.outcome is not GateOutcome.PASS:
            status = OrderStatus.DENIED if verdict.outcome is GateOutcome.DENY else OrderStatus.THROTTLED
            return self._emit(book, self._unsent(decision, coid, source, status, verdict.reason))

        order = OrderCtx(
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
            mode=self.config.mode,
            source=source,
        )
        result = await self.executor.submit(order)
        return self._emit(book, self._sent(order, result))

    async def _change_order(self, book: OrderBook, decision: Decision) -> CommandResult:
        target = decision.target_client_order_id
        assert target is not None  # the Decision validator guarantees it for CANCEL/AMEND
        record = book.get(target)
        if record is None:
            return CommandResult(dropped="unknown_target")
        if is_terminal(record.status):
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
        return self._emit(book, record.last.model_copy(update=update))

    def _emit(self, book: OrderBook, event: ExecEvent) -> CommandResult:
        book.apply(event)
        return CommandResult(events=(event,))

    def _unsent(
        self,
        decision: Decision,
        coid: str,
        source: SourceRef,
        status: OrderStatus,
        reason: str | None,
    ) -> ExecEvent:
        return ExecEvent(
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
            mode=self.config.mode,
            scenario=decision.scenario,
            source=source,
        )

    def _sent(self, order: OrderCtx, result: ExecResult) -> ExecEvent:
        # Slippage is measured against the upstream intent, so the rounding move is included.
        return ExecEvent(
            event_id=event_id(order.client_order_id, 1),
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
