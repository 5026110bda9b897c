"""Signals to commands: a scored signal becomes an order when |score| reaches the mode's Z.

The side comes from the score's sign, the size from the scenario (`order_qty`), costs from the
scenario; the order is a MARKET IOC (a signal carries no price). The venue's grid for the symbol
comes from configuration. Below the threshold the signal is a recorded no-action.
"""

from __future__ import annotations

from worker.contract.enums import OrderType, Side, TimeInForce
from worker.contract.messages import Decision, Signal
from worker.policy.modes import ScenarioParams, SymbolFilters
from worker.policy.pretrade import PreTradePolicy


class MissingFilters(LookupError):
    """No venue grid is configured for the signal's symbol: the signal cannot be sized."""


def signal_to_decision(
    signal: Signal, params: ScenarioParams, mode: str, filters: dict[str, SymbolFilters]
) -> Decision | None:
    """The command a signal asks for, or None for no action (|score| below the mode's Z)."""
    if abs(signal.score) < params.z_threshold:
        return None
    grid = filters.get(signal.symbol)
    if grid is None:
        raise MissingFilters(f"no tick/step/min_notional configured for {signal.symbol} (modes file `symbols:`)")
    return Decision(
        signal_row_id=signal.signal_row_id,
        ts_ms=signal.ts_ms,
        event_ts_ms=signal.event_ts_ms,
        symbol=signal.symbol,
        side=Side.BUY if signal.score > 0 else Side.SELL,
        qty=params.order_qty,
        px=None,
        order_type=OrderType.MARKET,
        tif=TimeInForce.IOC,
        regime=signal.regime,
        scenario=mode,
        tick_size=grid.tick_size,
        step_size=grid.step_size,
        min_notional=grid.min_notional,
        warmup=signal.warmup,
        guard_reason=signal.guard_reason,
        consistency=signal.consistency,
        weak_signal_throttle=signal.weak_signal_throttle,
        costs_bps=params.cost_bps,
    )


def signal_command(signal: Signal, policy: PreTradePolicy) -> Decision | None:
    """A signal's command, live (core/intake.py) and in a replay (runtime/replay_merge.py): its
    gate statistics set the adaptive factor of the policy's current partition state, then it
    becomes a command under the mode in force at its event time (None: no action). Raises
    `MissingFilters` as `signal_to_decision` does."""
    policy.observe_gate_stats(signal.gate_reason_stats)
    modes = policy.modes
    mode, _ = modes.choose(signal.event_ts_ms)
    return signal_to_decision(signal, modes.modes[mode], mode, modes.symbol_filters)
