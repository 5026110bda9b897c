"""A replay of every input role: the merged inputs (worker/runtime/replay_inputs.py) through the
engine, applied as the live worker applies them.

  * a control record changes the policy as the live control feed does (worker/policy/feeds.py):
    the explicit mode, a symbol's feed health, the market activity of the market trigger;
  * an input runs under the policy state of its input partition (modes per symbol, the rate wall,
    the adaptive factor), one state per partition as each live partition owner keeps one;
  * a signal sets that state's adaptive factor from its gate statistics, then becomes a command
    under the mode at its event time, or none (`signal_no_action`), or a `config` reject when the
    modes file has no grid for its symbol (live: the DLQ) — worker/policy/signals.py;
  * before each input, market time advances to its event time (resting orders fill), as in the
    decisions-only replay; the n-th input in the merge order carries the source (`replay`, 0, n).

Output and digest are made exactly as the decisions-only replay makes them (`EventStream`), so a
replay of decisions alone through here gives that replay's digest.
"""

from __future__ import annotations

from collections.abc import Sequence

from worker.contract.messages import Decision, HarvestHealth, MarketSnapshot, Signal, StrategyModeCommand
from worker.contract.orders import SourceRef
from worker.contract.trusted import trusted
from worker.core.backtest import BacktestExecutor
from worker.core.engine import ExecutionEngine
from worker.core.order_table import OrderTable
from worker.policy.feeds import ControlInputs
from worker.policy.pretrade import PolicyState
from worker.policy.signals import MissingFilters, signal_command
from worker.runtime.replay import (
    PROGRESS_EVERY,
    REPLAY_SOURCE,
    EventStream,
    ReplayProgress,
    ReplayResult,
    ReplaySink,
    cyclic_gc_paused,
)
from worker.runtime.replay_inputs import Item, MergedInputs
from worker.runtime.venue import handle


async def replay_merged(
    engine: ExecutionEngine,
    merged: MergedInputs,
    sinks: Sequence[ReplaySink] = (),
    progress: ReplayProgress | None = None,
) -> ReplayResult:
    """Runs merged inputs through the engine in their merge order; returns counts and the digest."""
    result = ReplayResult(decisions=merged.records["decisions"], signals=merged.records["signals"])
    result.rejected.update(merged.rejected)
    result.ignored.update(merged.ignored)
    total = merged.inputs
    if progress is not None:
        progress(0, total)
    controls = ControlInputs(engine.policy)
    states: dict[int, PolicyState] = {}
    book = OrderTable()
    stream = EventStream(sinks, result)
    venue = engine.executor if isinstance(engine.executor, BacktestExecutor) else None
    done = 0
    with cyclic_gc_paused():
        for item in merged.items:
            message = item.message
            if not isinstance(message, Decision | Signal):
                _apply_control(controls, item, result)
                continue
            state = states.get(item.partition)
            if state is None:
                state = states[item.partition] = PolicyState()
            engine.policy.state = state
            if venue is not None:
                for client_order_id, update in venue.fills_until(message.event_ts_ms):
                    await stream.emit(engine.observe(book, client_order_id, update))
            source = trusted(SourceRef, topic=REPLAY_SOURCE, partition=0, offset=done)
            done += 1
            decision = _command(engine, message, result)
            if decision is not None:
                handled = await handle(engine, book, decision, source)
                await stream.emit(handled.events)
                if handled.dropped:
                    result.dropped[handled.dropped] += 1
            if progress is not None and done % PROGRESS_EVERY == 0:
                progress(done, total)
        await stream.finish(engine, book)
    if progress is not None:
        progress(total, total)
    return result


def _command(engine: ExecutionEngine, message: Decision | Signal, result: ReplayResult) -> Decision | None:
    if isinstance(message, Decision):
        return message
    try:
        decision = signal_command(message, engine.policy)
    except MissingFilters:
        result.rejected["config"] += 1  # live: dead-lettered with error_class=config
        return None
    if decision is None:
        result.dropped["signal_no_action"] += 1
    return decision


def _apply_control(controls: ControlInputs, item: Item, result: ReplayResult) -> None:
    message = item.message
    try:
        if isinstance(message, MarketSnapshot):
            controls.market(message)
        elif isinstance(message, StrategyModeCommand):
            controls.mode(message)
        elif isinstance(message, HarvestHealth):
            controls.health(message)
    except ValueError:
        result.ignored[item.role] += 1  # live: logged and counted, never fatal
        return
    result.control[item.role] += 1
