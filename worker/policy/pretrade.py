"""Everything that decides, before any venue call, whether an order may go: the strategy mode
in force for its symbol, the upstream-state gates (with the mode's thresholds), and the
order-rate wall (with the mode's limits, scaled by the adaptive factor).

Stateful but deterministic: every input is the command itself (its `event_ts_ms` is the time),
so a replay reaches the same verdicts. What the inputs change (the modes per symbol, the rate
wall's buckets, the adaptive factor) is a `PolicyState` per input partition: the runtime stages
it with the partition's batch, drops it when the batch's transaction aborts, and rebuilds it from
the partition's exec-events on takeover, so processing an input again gives the same events. A
mode is tracked per symbol so that its switches are ordered by that symbol's own event time.

Each rule is enforced, observed or off per (mode, symbol) (`worker.policy.rules`). The wall the
rate limits are checked against is the adaptive one (scaled by upstream gate statistics and the
harvester's loss ratio) unless `adaptive_throttle` is not enforced: then a plain wall (the mode's
rates as they are) decides, and with `adaptive_throttle: observe` the adaptive wall is asked too,
for every order the plain one admits. A wall in `observe` is asked exactly as an enforced one
(an order it refuses takes no token), so it counts what enforcing it would stop.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

from worker.contract.enums import OrderStatus
from worker.contract.events import ExecEvent
from worker.contract.messages import Decision, HarvestHealth
from worker.policy.gating import PASS, GateOutcome, GatePolicy, GateVerdict, pre_trade_gate
from worker.policy.modes import ModeManager, ModeSwitch, ScenarioParams, load_modes
from worker.policy.rules import EffectiveRules, Rule, RuleState
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


# Reasons of the rate wall's own refusals: such an order reached the wall (and spent its refill).
WALL_REASONS = frozenset({"rate_symbol", "rate_global"})


@dataclass
class PolicyState:
    """What the inputs of one partition change in the policy; staged and rebuilt with it."""

    symbol_mode: dict[str, str] = field(default_factory=dict)
    wall: OrderRateWall | None = None
    plain: OrderRateWall | None = None  # the wall without adaptive scaling, when a rule needs it
    factor: float = 1.0  # adaptive scaling of every rate, from upstream gate statistics
    health_version: int = 0  # the feed-health factors last applied to `wall`

    def copy(self) -> PolicyState:
        return copy.deepcopy(self)


@dataclass
class PreTradePolicy:
    modes: ModeManager
    state: PolicyState = field(default_factory=PolicyState)  # the partition being processed
    _stale: set[str] = field(default_factory=set)  # symbols whose data feed has stopped
    _health_factor: dict[str, float] = field(default_factory=dict)
    _health_version: int = 0
    _gates: dict[str, GatePolicy] = field(default_factory=dict)  # per mode, built once
    _rules: dict[tuple[str, str], EffectiveRules] = field(default_factory=dict)  # per (mode, symbol)
    switches: int = 0

    @property
    def factor(self) -> float:
        return self.state.factor

    @classmethod
    def default(cls) -> PreTradePolicy:
        return cls(ModeManager(ZoneInfo("UTC"), {DEFAULT_MODE: DEFAULT_PARAMS}, DEFAULT_MODE))

    def check(self, decision: Decision, client_order_id: str) -> Verdict:
        now = decision.event_ts_ms
        mode, trigger = self.modes.choose(now)
        switch = None
        state = self.state
        previous = state.symbol_mode.get(decision.symbol)
        if previous != mode or state.wall is None:
            state.symbol_mode[decision.symbol] = mode
            if previous is not None and previous != mode:
                switch = ModeSwitch(previous, mode, trigger, now, decision.symbol)
                self.switches += 1
            self._configure(self.modes.modes[mode])
        self._apply_health()
        gates = self._gates.get(mode)
        if gates is None:
            gates = self._gates[mode] = GatePolicy(min_consistency=self.modes.modes[mode].min_consistency)
        rules = self.rules_for(mode, decision.symbol)
        gate = pre_trade_gate(decision, client_order_id, gates, rules)
        if gate.outcome is GateOutcome.PASS:
            gate = self._after_gates(decision.symbol, now, rules, gate.observed)
        return Verdict(mode, gate, switch)

    def rules_for(self, mode: str, symbol: str) -> EffectiveRules:
        """The rule states an order of `symbol` in `mode` is checked with (resolved once)."""
        rules = self._rules.get((mode, symbol))
        if rules is None:
            rules = self._rules[(mode, symbol)] = self.modes.rules.resolve(mode, symbol)
        return rules

    def rules_overview(self) -> list[str]:
        """The effective rules per mode (and per symbol override), one line each."""
        return self.modes.rules.overview(self.modes.modes)

    def _after_gates(self, symbol: str, now: int, rules: EffectiveRules, observed: tuple[str, ...]) -> GateVerdict:
        """The stale-feed halt and the rate wall, for an order the upstream-state gates let go."""
        seen = list(observed)
        if symbol in self._stale:
            state = rules.states[Rule.HARVEST_HEALTH]
            if state is RuleState.ENFORCE:
                return GateVerdict(GateOutcome.DENY, "harvest_stale")
            if state is RuleState.OBSERVE:
                seen.append(Rule.HARVEST_HEALTH.value)
        reason, wall_observed = self._wall_stage(symbol, now, rules)
        if reason is not None:
            return GateVerdict(GateOutcome.THROTTLE, reason)
        seen += wall_observed
        if not seen:
            return PASS
        return GateVerdict(GateOutcome.PASS, None, tuple(sorted(seen)))

    def _wall_stage(self, symbol: str, now: int, rules: EffectiveRules) -> tuple[str | None, list[str]]:
        """Asks the wall(s) the rules name: (the reason of an enforced refusal, rules observed)."""
        wall_state = rules.states[Rule.RATE_WALL]
        if wall_state is RuleState.OFF:
            return None, []
        state = self.state
        assert state.wall is not None
        adaptive = rules.states[Rule.ADAPTIVE_THROTTLE]
        wall = state.wall if adaptive is RuleState.ENFORCE else self._plain_wall()
        reason = wall.admit(symbol, now)
        if reason is not None:
            if wall_state is RuleState.ENFORCE:
                return reason, []
            return None, [Rule.RATE_WALL.value]
        if adaptive is RuleState.OBSERVE and state.wall.admit(symbol, now) is not None:
            return None, [Rule.ADAPTIVE_THROTTLE.value]
        return None, []

    def _plain_wall(self) -> OrderRateWall:
        state = self.state
        if state.plain is None:
            assert state.wall is not None
            state.plain = OrderRateWall(state.wall.limits)
        return state.plain

    def fixed_gate(self) -> tuple[str, float] | None:
        """(mode, min_consistency) when every verdict depends on the decision alone: one mode
        (no schedule, no market trigger, nothing explicit), every rule enforced, no order-rate
        wall, no stale feed. The compiled replay fold covers that policy; None for any other."""
        modes = self.modes
        if modes.schedule or modes.market is not None or modes.explicit is not None or self._stale:
            return None
        if modes.rules.top or modes.rules.modes or modes.rules.symbols:
            return None
        params = modes.modes[modes.default]
        if params.per_symbol_orders_per_s > 0 or params.global_orders_per_s > 0:
            return None
        return modes.default, params.min_consistency

    def observe_gate_stats(self, gate_reason_stats: dict[str, int]) -> None:
        """Upstream gate statistics (from each signal) set the adaptive factor of every rate."""
        factor = adaptive_factor(gate_reason_stats, GATE_STATS_WINDOW)
        state = self.state
        if factor != state.factor:
            state.factor = factor
            if state.wall is not None:
                state.wall.configure(state.wall.limits, factor)

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
        self._health_version += 1  # applied to each partition's wall at its next check

    def mode_of(self, symbol: str) -> str | None:
        return self.state.symbol_mode.get(symbol)

    def restore(self, first_event: ExecEvent) -> None:
        """Rebuilds `state` from a committed order's first event (on takeover, in partition order).

        The mode of each symbol is the one its latest order was built under; the wall is fed
        every order that reached it (admitted, or refused by the wall itself) at its event time,
        as `check` did. The adaptive factor is not recorded in events: it restarts at 1.0 and
        follows the next signal's statistics.
        """
        e = first_event
        self.restore_order(e.mode, e.symbol, e.status, e.reason, e.event_ts_ms)

    def walls_admit_all(self) -> bool:
        """True if no mode has an order-rate limit: every wall then admits every order and never
        changes, so restoring a symbol again under the same mode changes nothing (the compiled
        rebuild restores only the orders that can change the state: history.rs `Restores`)."""
        return all(
            params.per_symbol_orders_per_s <= 0 and params.global_orders_per_s <= 0
            for params in self.modes.modes.values()
        )

    def restore_order(self, mode: str, symbol: str, status: OrderStatus, reason: str | None, event_ts_ms: int) -> None:
        """`restore` from the fields it reads (the compiled rebuild has no event models)."""
        if mode not in self.modes.modes:
            return
        state = self.state
        if state.symbol_mode.get(symbol) != mode or state.wall is None:
            state.symbol_mode[symbol] = mode
            self._configure(self.modes.modes[mode])
        reached_wall = status not in (OrderStatus.DENIED, OrderStatus.THROTTLED) or (
            status is OrderStatus.THROTTLED and reason in WALL_REASONS
        )
        if reached_wall and state.wall is not None:
            # The same walls `check` asked, in the same order (rules in observe included).
            self._wall_stage(symbol, event_ts_ms, self.rules_for(mode, symbol))

    def _apply_health(self) -> None:
        state = self.state
        if state.health_version == self._health_version or state.wall is None:
            return
        for symbol, factor in sorted(self._health_factor.items()):
            state.wall.tighten_symbol(symbol, factor)
        state.health_version = self._health_version

    def _configure(self, params: ScenarioParams) -> None:
        limits = RateLimits(params.per_symbol_orders_per_s, params.global_orders_per_s)
        state = self.state
        if state.wall is None:
            state.wall = OrderRateWall(limits, state.factor, dict(self._health_factor))
            state.health_version = self._health_version
        state.wall.configure(limits, state.factor)
        if state.plain is not None:
            state.plain.configure(limits, 1.0)


def effective_rules(modes_path: Path | None) -> list[str]:
    """The rollout rules a worker started with `--modes modes_path` enforces, observes or ignores,
    one line per group of modes (and per symbol override): for `config show` and the summaries.
    Raises ModesConfigError (from load_modes) for a bad file."""
    policy = PreTradePolicy.default() if modes_path is None else PreTradePolicy(load_modes(modes_path))
    return policy.rules_overview()
