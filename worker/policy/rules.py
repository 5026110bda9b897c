"""Rollout switches: every pass-through rule is `enforce` (the default), `observe` or `off`.

`enforce` is what the rule has always done: it stops the order (DENIED or THROTTLED). `observe`
lets the order go ahead and lists the rule in the exec-event's `observed`, so that an operator can
see what the rule *would* stop before letting it act. `off` ignores the rule.

The states come from the modes file's top-level `rules:` map (documented in docs/operations.md):
rule names (and `guard:<reason>` for one guard reason) map to a state, with `modes:` and
`symbols:` sub-maps overriding them. The most specific layer that names a rule wins: symbol, then
mode, then the top level; within one layer `guard:<reason>` beats `guard`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

GUARD_PREFIX = "guard:"


class RuleState(StrEnum):
    ENFORCE = "enforce"
    OBSERVE = "observe"
    OFF = "off"


class Rule(StrEnum):
    """The pass-through rules, in the order the gates apply them."""

    WARMUP = "warmup"  # upstream still warming up: DENIED warmup
    GUARD = "guard"  # an active upstream guard: DENIED guard:<reason>
    WEAK_SIGNAL = "weak_signal"  # upstream marks the signal weak: THROTTLED weak_signal
    LOW_CONSISTENCY = "low_consistency"  # down-sampling below min_consistency: THROTTLED
    HARVEST_HEALTH = "harvest_health"  # a stale data feed halts the symbol: DENIED harvest_stale
    RATE_WALL = "rate_wall"  # the per-symbol and global token buckets: THROTTLED rate_*
    # The wall's adaptive tightening (upstream gate statistics, the harvester's loss ratio).
    ADAPTIVE_THROTTLE = "adaptive_throttle"


# What a rule does to an order it stops: the `outcome` label of executor_rule_observed_total.
RULE_OUTCOME: dict[str, str] = {
    Rule.WARMUP: "DENIED",
    Rule.GUARD: "DENIED",
    Rule.HARVEST_HEALTH: "DENIED",
    Rule.WEAK_SIGNAL: "THROTTLED",
    Rule.LOW_CONSISTENCY: "THROTTLED",
    Rule.RATE_WALL: "THROTTLED",
    Rule.ADAPTIVE_THROTTLE: "THROTTLED",
}

RuleMap = Mapping[str, RuleState]  # rule name or guard:<reason> -> state
_NAMES = frozenset(rule.value for rule in Rule)


class RulesConfigError(ValueError):
    pass


@dataclass(frozen=True)
class EffectiveRules:
    """The states in force for one (mode, symbol)."""

    states: Mapping[Rule, RuleState]
    guard_reasons: Mapping[str, RuleState] = field(default_factory=dict)  # reasons set on their own

    def __getitem__(self, rule: Rule) -> RuleState:
        return self.states[rule]

    def guard(self, reason: str) -> RuleState:
        return self.guard_reasons.get(reason, self.states[Rule.GUARD])

    def describe(self) -> str:
        """`all enforce`, or the rules that are not enforced: `guard=observe guard:news=off (others enforce)`."""
        parts = [
            f"{rule.value}={self.states[rule].value}" for rule in Rule if self.states[rule] is not RuleState.ENFORCE
        ]
        parts += [f"{GUARD_PREFIX}{r}={s.value}" for r, s in sorted(self.guard_reasons.items())]
        return " ".join([*parts, "(others enforce)"]) if parts else "all enforce"


ALL_ENFORCED = EffectiveRules({rule: RuleState.ENFORCE for rule in Rule})


@dataclass(frozen=True)
class RulesConfig:
    """The `rules:` map of a modes file: a top-level layer, overridden per mode and per symbol."""

    top: RuleMap = field(default_factory=dict)
    modes: Mapping[str, RuleMap] = field(default_factory=dict)
    symbols: Mapping[str, RuleMap] = field(default_factory=dict)

    def resolve(self, mode: str, symbol: str | None = None) -> EffectiveRules:
        """The rules for an order of `symbol` in `mode` (symbol None: the mode's own)."""
        layers = [self.symbols.get(symbol, {}) if symbol is not None else {}, self.modes.get(mode, {}), self.top]
        states = {rule: _first(layers, (rule.value,)) for rule in Rule}
        reasons = {key[len(GUARD_PREFIX) :] for layer in layers for key in layer if key.startswith(GUARD_PREFIX)}
        guard_reasons = {r: _first(layers, (f"{GUARD_PREFIX}{r}", Rule.GUARD.value)) for r in sorted(reasons)}
        return EffectiveRules(states, guard_reasons)

    def overview(self, modes: Iterable[str]) -> list[str]:
        """The effective rules, one line per group of modes that agree, then per symbol override:
        what run and replay summaries print (and what a `config show` can print)."""
        names = sorted(modes)
        lines = [f"{_plural('mode', group)}: {text}" for text, group in self._grouped(names, None)]
        for symbol in sorted(self.symbols):
            for text, group in self._grouped(names, symbol):
                lines.append(f"symbol {symbol} in {_plural('mode', group)}: {text}")
        return lines

    def _grouped(self, modes: list[str], symbol: str | None) -> list[tuple[str, list[str]]]:
        """Modes whose effective rules read the same, together."""
        groups: dict[str, list[str]] = {}
        for mode in modes:
            groups.setdefault(self.resolve(mode, symbol).describe(), []).append(mode)
        return list(groups.items())


def _plural(noun: str, names: list[str]) -> str:
    return f"{noun}{'s' if len(names) > 1 else ''} {', '.join(names)}"


def _first(layers: list[RuleMap], keys: tuple[str, ...]) -> RuleState:
    for layer in layers:
        for key in keys:
            state = layer.get(key)
            if state is not None:
                return state
    return RuleState.ENFORCE


def parse_rule_map(raw: Any, where: str) -> dict[str, RuleState]:
    """A `{rule: state}` map from YAML; raises RulesConfigError saying what to fix.

    YAML reads a bare `off` as false: it is accepted as `off`.
    """
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise RulesConfigError(f"{where}: expected a map of rule: enforce|observe|off")
    names = ", ".join(rule.value for rule in Rule)
    parsed: dict[str, RuleState] = {}
    for key, value in raw.items():
        key = str(key)
        if key not in _NAMES and not (key.startswith(GUARD_PREFIX) and len(key) > len(GUARD_PREFIX)):
            raise RulesConfigError(f"{where}: unknown rule {key!r}; rules are {names}, or guard:<reason>")
        if value is False:
            value = RuleState.OFF.value
        try:
            parsed[key] = RuleState(value)
        except ValueError:
            raise RulesConfigError(f"{where}.{key}: {value!r} is not a state; use enforce, observe or off") from None
    return parsed


def parse_rules(raw: Any, known_modes: Iterable[str]) -> RulesConfig:
    """The whole `rules:` section: rule states, plus `modes:` and `symbols:` override maps."""
    if raw is None:
        return RulesConfig()
    if not isinstance(raw, dict):
        raise RulesConfigError("rules: expected a map (rule: enforce|observe|off, modes: {...}, symbols: {...})")
    body = dict(raw)
    by_mode = body.pop("modes", None) or {}
    by_symbol = body.pop("symbols", None) or {}
    if not isinstance(by_mode, dict) or not isinstance(by_symbol, dict):
        raise RulesConfigError("rules.modes and rules.symbols: expected maps of name: {rule: state}")
    unknown = sorted(set(map(str, by_mode)) - set(known_modes))
    if unknown:
        raise RulesConfigError(f"rules.modes: {', '.join(unknown)} not defined under modes:")
    return RulesConfig(
        top=parse_rule_map(body, "rules"),
        modes={str(m): parse_rule_map(v, f"rules.modes.{m}") for m, v in by_mode.items()},
        symbols={str(s): parse_rule_map(v, f"rules.symbols.{s}") for s, v in by_symbol.items()},
    )
