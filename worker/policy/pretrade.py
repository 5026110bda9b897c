"""Everything that decides, before any venue call, whether an order may go: the strategy mode
in force for its symbol, the upstream-state gates (with the mode's thresholds), and the
order-rate wall (with the mode's limits, scaled by the adaptive factor).

Stateful but deterministic: every input is the command itself (its `event_ts_ms` is the time),
so a replay reaches the same verdicts. The wall is per worker process; a mode is tracked per
symbol so that its switches are ordered by that symbol's own event time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from zoneinfo import ZoneInfo

from worker.contract.messages import Decision, HarvestHealth
from worker.policy.gating import GateOutcome, GatePolicy, GateVerdict, pre_trade_gate
from worker.policy.modes import ModeManager, ModeSwitch, ScenarioParams
from worker.policy.throttle import OrderRateWall, RateLimits, adaptive_factor

DEFAULT_MODE = "default"
# Harvester health: rate scale = 1 - HEALTH_SENSITIVITY x loss ratio, floored at HEALTH_FLOOR.
HEALTH_SENSITIVITY = 5.0
HEALTH_FLOOR = 0.2
# gate_reason_stats are counts over upstream's recent window of rows; 100 is the Signal layer's
# window. The share gated out becomes the rate factor (see throttle.adaptive_factor).
GATE_STATS_WINDOW = 100
# Without a modes file: upstream's 0.5 consistency threshold, no rate wall (0 = unlimited).
DEFAULT_PARAMS = ScenarioParams(
    z_threshold=Decimal(2),
    take_profit_bps=Decimal(0),
    stop_loss_bps=Decimal(0),
    cost_bps=Decimal(0),
    order_qty=Decimal(0),
    per_symbol_orders_per_s=0.0,
    global_orders_per_s=0.0,
)


@dataclass(frozen=True, slots=True)
class Verdict:
    mode: str
    gate: GateVerdict
    switch: ModeSwitch | None = None


@dataclass
class PreTradePolicy:
    modes: ModeManager
    factor: float = 1.0  # adaptive scaling of every rate (gate stats, health)
    _symbol_mode: dict[str, str] = field(default_factory=dict)
    _wall: OrderRateWall | None = None
    _stale: set[str] = field(default_factory=set)  # symbols whose data feed has stopped
    _health_factor: dict[str, float] = field(default_factory=dict)
    _gates: dict[str, GatePolicy] = field(default_factory=dict)  # per mode, built once
    switches: int = 0

    @classmethod
    def default(cls) -> PreTradePolicy:
        return cls(ModeManager(ZoneInfo("UTC"), {DEFAULT_MODE: DEFAULT_PARAMS}, DEFAULT_MODE))

    def check(self, decision: Decision, client_order_id: str) -> Verdict:
        now = decision.event_ts_ms
        mode, trigger = self.modes.choose(now)
        switch = None
        previous = self._symbol_mode.get(decision.symbol)
        if previous != mode:
            self._symbol_mode[decision.symbol] = mode
            if previous is not None:
                switch = ModeSwitch(previous, mode, trigger, now, decision.symbol)
                self.switches += 1
            self._configure(self.modes.modes[mode])
        gates = self._gates.get(mode)
        if gates is None:
            gates = self._gates[mode] = GatePolicy(min_consistency=self.modes.modes[mode].min_consistency)
        gate = pre_trade_gate(decision, client_order_id, gates)
        if gate.outcome is GateOutcome.PASS and decision.symbol in self._stale:
            gate = GateVerdict(GateOutcome.DENY, "harvest_stale")
        if gate.outcome is GateOutcome.PASS:
            assert self._wall is not None
            reason = self._wall.admit(decision.symbol, now)
            if reason is not None:
                gate = GateVerdict(GateOutcome.THROTTLE, reason)
        return Verdict(mode, gate, switch)

    def observe_gate_stats(self, gate_reason_stats: dict[str, int]) -> None:
        """Upstream gate statistics (from each signal) set the adaptive factor of every rate."""
        factor = adaptive_factor(gate_reason_stats, GATE_STATS_WINDOW)
        if factor != self.factor:
            self.factor = factor
            if self._wall is not None:
                self._wall.configure(self._wall.limits, factor)

    def observe_health(self, health: HarvestHealth) -> None:
        """Harvester health tightens a symbol's order-frequency wall, or halts it when stale.

        Loss = (duplicates + drops) / rows in the window; the symbol's rate is scaled by
        1 - 5 x loss (4% loss -> 80% of the rate), never below 20%: a noisy feed slows trading,
        only a stale one stops it.
        """
        if health.stale:
            self._stale.add(health.symbol)
        else:
            self._stale.discard(health.symbol)
        loss = (health.dedupe_count + health.drop_count) / max(1, health.window_rows)
        factor = max(HEALTH_FLOOR, 1.0 - HEALTH_SENSITIVITY * loss)
        self._health_factor[health.symbol] = factor
        if self._wall is not None:
            self._wall.tighten_symbol(health.symbol, factor)

    def mode_of(self, symbol: str) -> str | None:
        return self._symbol_mode.get(symbol)

    def _configure(self, params: ScenarioParams) -> None:
        limits = RateLimits(params.per_symbol_orders_per_s, params.global_orders_per_s)
        if self._wall is None:
            self._wall = OrderRateWall(limits, self.factor, dict(self._health_factor))
        self._wall.configure(limits, self.factor)
