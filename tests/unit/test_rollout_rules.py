"""Rollout switches: every pass-through rule in each state (enforce, observe, off), with exact counts.

The stream holds decisions that exactly one rule stops (warmup, guard with two reasons, weak
signal, zero consistency) and plain ones; `enforce` must stop each, `observe` must let each go
ahead and list the rule on its events, `off` must let each go ahead and list nothing.
"""

from __future__ import annotations

from collections import Counter
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import orjson
import pytest

from tests.factories import decision_bytes
from worker.codec.json_codec import decode_json, encode_json
from worker.contract.enums import OrderStatus
from worker.contract.events import ExecEvent
from worker.contract.messages import Decision, HarvestHealth
from worker.core.backtest import BacktestExecutor
from worker.core.engine import ExecutionEngine
from worker.io.outbox import OutboxLine
from worker.policy.modes import ModeManager, ModesConfigError, ScenarioParams, load_modes
from worker.policy.pretrade import PreTradePolicy, effective_rules
from worker.policy.rng import Rng
from worker.policy.rules import RULE_OUTCOME, Rule, RulesConfig, RuleState, parse_rules
from worker.runtime.metrics import WorkerMetrics
from worker.runtime.replay import ReplayResult, list_sink, read_input_file, replay
from worker.runtime.summary import RunSummary

UTC = ZoneInfo("UTC")
T0 = 1_767_225_600_000
SAMPLE = Path(__file__).resolve().parents[2] / "examples" / "decisions.jsonl"
NO_WALL = ScenarioParams(Decimal(2), Decimal(30), Decimal(20), Decimal(6), Decimal("0.01"), 0.0, 0.0)
# (signal row prefix, count, decision overrides, the rule that stops it, the status it gets)
KINDS = (
    ("warm", 5, {"warmup": True}, Rule.WARMUP, OrderStatus.DENIED),
    ("news", 4, {"guard_reason": "news"}, Rule.GUARD, OrderStatus.DENIED),
    ("halt", 3, {"guard_reason": "halt"}, Rule.GUARD, OrderStatus.DENIED),
    ("weak", 6, {"weak_signal_throttle": True}, Rule.WEAK_SIGNAL, OrderStatus.THROTTLED),
    # Consistency 0 is kept with probability 0: every one is down-sampled, whatever its id.
    ("low", 7, {"consistency": 0.0}, Rule.LOW_CONSISTENCY, OrderStatus.THROTTLED),
    ("plain", 10, {}, None, None),
)
FLAGGED = {Rule.WARMUP: 5, Rule.GUARD: 7, Rule.WEAK_SIGNAL: 6, Rule.LOW_CONSISTENCY: 7}
GATE_RULES = tuple(FLAGGED)
STOPPED = frozenset({OrderStatus.DENIED, OrderStatus.THROTTLED})


def stream() -> list[bytes]:
    values: list[bytes] = []
    for prefix, count, overrides, _, _ in KINDS:
        for i in range(count):
            at = T0 + 1_000 * len(values)
            values.append(decision_bytes(signal_row_id=f"{prefix}-{i}", event_ts_ms=at, ts_ms=at + 500, **overrides))
    return values


def policy(rules: RulesConfig, params: ScenarioParams = NO_WALL) -> PreTradePolicy:
    return PreTradePolicy(ModeManager(UTC, {"day": params}, "day", rules=rules))


async def run(rules: RulesConfig, values: list[bytes] | None = None) -> tuple[ReplayResult, list[ExecEvent]]:
    lines: list[OutboxLine] = []
    engine = ExecutionEngine(BacktestExecutor(Rng(0)), policy=policy(rules))
    result = await replay(engine, values if values is not None else stream(), [list_sink(lines)])
    return result, [decode_json(ExecEvent, line.payload) for line in lines]


def kind_of(event: ExecEvent) -> str:
    return event.signal_row_id.split("-")[0]


async def test_everything_enforced_is_todays_behaviour() -> None:
    result, events = await run(RulesConfig())
    assert result.orders[OrderStatus.DENIED] == 12 and result.orders[OrderStatus.THROTTLED] == 13
    assert sum(result.orders.values()) == 35 and not result.observed
    assert all(e.observed is None for e in events)
    reasons = Counter(e.reason for e in events if e.status in STOPPED)
    assert reasons == {"warmup": 5, "guard:news": 4, "guard:halt": 3, "weak_signal": 6, "low_consistency": 7}


@pytest.mark.parametrize("state", list(RuleState))
@pytest.mark.parametrize("rule", GATE_RULES)
async def test_each_gate_rule_in_each_state(rule: Rule, state: RuleState) -> None:
    result, events = await run(RulesConfig(top={rule.value: state}))
    freed = 0 if state is RuleState.ENFORCE else FLAGGED[rule]
    denied = 12 - (freed if RULE_OUTCOME[rule] == "DENIED" else 0)
    throttled = 13 - (freed if RULE_OUTCOME[rule] == "THROTTLED" else 0)
    assert (result.orders[OrderStatus.DENIED], result.orders[OrderStatus.THROTTLED]) == (denied, throttled)
    assert sum(result.orders.values()) == 35  # every decision is one order, whatever the state
    expected_observed = {rule.value: FLAGGED[rule]} if state is RuleState.OBSERVE else {}
    assert dict(result.observed) == expected_observed
    for event in events:
        stopper = next(k[3] for k in KINDS if k[0] == kind_of(event))
        if stopper is rule and state is not RuleState.ENFORCE:
            # The order went ahead; in observe it carries what the rule would have done.
            assert event.status not in STOPPED
            assert event.observed == ((rule.value,) if state is RuleState.OBSERVE else None)
        else:
            assert event.observed is None
            assert (event.status in STOPPED) == (stopper is not None)


async def test_an_observe_run_executes_every_order_a_rule_would_stop_and_records_each() -> None:
    enforced, stopped_events = await run(RulesConfig())
    everything = {rule.value: RuleState.OBSERVE for rule in Rule}
    observed, events = await run(RulesConfig(top=everything))
    stopped = {e.client_order_id: e for e in stopped_events if e.status in STOPPED}
    assert len(stopped) == 25
    by_id = {e.client_order_id: e for e in events}
    assert all(e.status not in STOPPED for e in events)  # nothing is stopped
    for client_order_id, event in stopped.items():
        reason = event.reason or ""
        rule = "guard" if reason.startswith("guard:") else reason
        assert by_id[client_order_id].observed == (rule,), client_order_id
    assert sum(1 for e in events if e.observed) == 25
    assert dict(observed.observed) == {r.value: n for r, n in FLAGGED.items()}
    assert observed.digest != enforced.digest


async def test_guard_per_reason_and_the_most_specific_layer_wins() -> None:
    rules = parse_rules(
        {
            "guard": "observe",
            "guard:halt": "enforce",
            "symbols": {"BTCUSDT": {"warmup": "off"}},
            "modes": {"day": {"weak_signal": "observe"}},
        },
        ["day"],
    )
    result, events = await run(rules)
    reasons = Counter(e.reason for e in events if e.status in STOPPED)
    assert reasons == {"guard:halt": 3, "low_consistency": 7}
    assert dict(result.observed) == {"guard": 4, "weak_signal": 6}
    # A symbol's own `guard` beats a less specific layer's `guard:<reason>`.
    layered = RulesConfig(top={"guard:halt": RuleState.ENFORCE}, symbols={"BTCUSDT": {"guard": RuleState.OFF}})
    assert layered.resolve("day", "BTCUSDT").guard("halt") is RuleState.OFF
    assert layered.resolve("day", "ETHUSDT").guard("halt") is RuleState.ENFORCE
    assert layered.resolve("day", "ETHUSDT").guard("news") is RuleState.ENFORCE


async def test_observed_rules_are_listed_only_when_the_order_goes_ahead_and_sorted() -> None:
    both = [decision_bytes(signal_row_id="both", warmup=True, guard_reason="news", weak_signal_throttle=True)]
    observe = RulesConfig(
        top={"warmup": RuleState.OBSERVE, "guard": RuleState.OBSERVE, "weak_signal": RuleState.OBSERVE}
    )
    _, (event,) = await run(observe, both)
    assert event.status not in STOPPED and event.observed == ("guard", "warmup", "weak_signal")
    # A later rule that is enforced stops it: what earlier rules observed is not recorded.
    stopped = RulesConfig(top={"warmup": RuleState.OBSERVE, "guard": RuleState.ENFORCE})
    _, (event,) = await run(stopped, both)
    assert (event.status, event.reason, event.observed) == (OrderStatus.DENIED, "guard:news", None)


def decision_at(at: int, symbol: str = "BTCUSDT", row: str = "r") -> Decision:
    return decode_json(Decision, decision_bytes(signal_row_id=row, event_ts_ms=at, ts_ms=at, symbol=symbol))


RATED = ScenarioParams(Decimal(2), Decimal(30), Decimal(20), Decimal(6), Decimal("0.01"), 2.0, 100.0)


def burst(pol: PreTradePolicy, count: int, at: int = T0) -> list[tuple[str | None, tuple[str, ...]]]:
    """`count` orders at the same instant: (throttle reason, observed) of each."""
    out = []
    for i in range(count):
        gate = pol.check(decision_at(at, row=f"b{at}-{i}"), f"id-{at}-{i}").gate
        out.append((gate.reason, gate.observed))
    return out


@pytest.mark.parametrize("state", list(RuleState))
def test_rate_wall_in_each_state(state: RuleState) -> None:
    # Two orders per second per symbol, burst two: the third and fourth of a burst are over.
    got = burst(policy(RulesConfig(top={"rate_wall": state}), RATED), 4)
    expected = {
        RuleState.ENFORCE: [(None, ()), (None, ()), ("rate_symbol", ()), ("rate_symbol", ())],
        RuleState.OBSERVE: [(None, ()), (None, ()), (None, ("rate_wall",)), (None, ("rate_wall",))],
        RuleState.OFF: [(None, ())] * 4,
    }[state]
    assert got == expected


@pytest.mark.parametrize("state", list(RuleState))
def test_adaptive_throttle_in_each_state(state: RuleState) -> None:
    pol = policy(RulesConfig(top={"adaptive_throttle": state}), RATED)
    burst(pol, 1)  # the wall exists once a symbol has been seen
    pol.observe_gate_stats({"spread_wide": 50})  # upstream gated half its window: half the rate
    got = burst(pol, 3, at=T0 + 60_000)  # buckets full again: burst 2 plain, 1 adaptive
    expected = {
        RuleState.ENFORCE: [(None, ()), ("rate_symbol", ()), ("rate_symbol", ())],
        RuleState.OBSERVE: [(None, ()), (None, ("adaptive_throttle",)), ("rate_symbol", ())],
        RuleState.OFF: [(None, ()), (None, ()), ("rate_symbol", ())],
    }[state]
    assert got == expected


@pytest.mark.parametrize("state", list(RuleState))
def test_harvest_health_in_each_state(state: RuleState) -> None:
    pol = policy(RulesConfig(top={"harvest_health": state}))
    stale = HarvestHealth.model_validate(
        {"symbol": "BTCUSDT", "ts_ms": T0, "window_rows": 100, "dedupe_count": 0, "drop_count": 0, "stale": True}
    )
    pol.observe_health(stale)
    gate = pol.check(decision_at(T0), "id-stale").gate
    other = pol.check(decision_at(T0, symbol="ETHUSDT"), "id-other").gate
    expected = {
        RuleState.ENFORCE: ("harvest_stale", ()),
        RuleState.OBSERVE: (None, ("harvest_health",)),
        RuleState.OFF: (None, ()),
    }[state]
    assert (gate.reason, gate.observed) == expected
    assert (other.reason, other.observed) == (None, ())


async def test_two_replays_with_rules_in_observe_give_the_same_digest() -> None:
    from examples.gen_decisions import decisions

    values = [orjson.dumps(d) for d in decisions(1_500, seed=81)]  # ~0.1 orders/s per symbol
    slow = ScenarioParams(Decimal(2), Decimal(30), Decimal(20), Decimal(6), Decimal("0.01"), 0.05, 0.2)
    everything = RulesConfig(top={rule.value: RuleState.OBSERVE for rule in Rule})
    digests, observed = set(), []
    for _ in range(2):
        engine = ExecutionEngine(BacktestExecutor(Rng(0)), policy=policy(everything, slow))
        result = await replay(engine, values)
        digests.add(result.digest)
        observed.append(result.observed)
    assert len(digests) == 1 and observed[0] == observed[1]
    assert {"warmup", "guard", "low_consistency", "weak_signal", "rate_wall"} <= set(observed[0])
    default = await replay(ExecutionEngine(BacktestExecutor(Rng(0)), policy=policy(RulesConfig(), slow)), values)
    assert default.digest not in digests


async def test_the_committed_sample_digest_does_not_change() -> None:
    # `observed` is left out of an event when empty, so existing digests stay what they were.
    values = read_input_file(SAMPLE)
    result = await replay(ExecutionEngine(BacktestExecutor(Rng(0))), values)
    assert result.digest == "a6778260b4820ab76fcd7a4c636c93e4ffec136e17e9adee537969f7a6df171f"


async def test_observed_travels_in_the_event_and_counts_once_per_order() -> None:
    _, events = await run(RulesConfig(top={"warmup": RuleState.OBSERVE}))
    event = next(e for e in events if e.observed)
    line = encode_json(event)
    assert b'"observed":["warmup"]' in line and decode_json(ExecEvent, line) == event
    assert b"observed" not in encode_json(next(e for e in events if not e.observed))
    follow_up = event.model_copy(update={"event_id": event.event_id[:-1] + "2"})
    metrics, summary = WorkerMetrics(), RunSummary()
    metrics.committed([event, follow_up])
    summary.add_events([event, follow_up])
    value = metrics.registry.get_sample_value("executor_rule_observed_total", {"rule": "warmup", "outcome": "DENIED"})
    assert value == 1.0 and summary.observed == {"warmup": 1}


def test_the_modes_file_rules_map(tmp_path: Path) -> None:
    text = (Path(__file__).resolve().parents[2] / "examples" / "modes.yaml").read_text(encoding="utf-8")
    path = tmp_path / "modes.yaml"
    path.write_text(
        text
        + "rules:\n  warmup: observe\n  weak_signal: off\n  'guard:halt': off\n"
        + "  modes:\n    storm: {warmup: enforce}\n  symbols:\n    DOGEUSDT: {low_consistency: observe}\n",
        encoding="utf-8",
    )
    manager = load_modes(path)
    assert manager.rules.resolve("day")[Rule.WARMUP] is RuleState.OBSERVE
    assert manager.rules.resolve("day")[Rule.WEAK_SIGNAL] is RuleState.OFF  # YAML's bare `off` is false
    assert manager.rules.resolve("storm")[Rule.WARMUP] is RuleState.ENFORCE
    assert manager.rules.resolve("day", "DOGEUSDT")[Rule.LOW_CONSISTENCY] is RuleState.OBSERVE
    assert manager.rules.resolve("day").guard("halt") is RuleState.OFF
    overview = PreTradePolicy(manager).rules_overview()
    assert overview[0] == "modes day, night: warmup=observe weak_signal=off guard:halt=off (others enforce)"
    assert overview[1] == "mode storm: weak_signal=off guard:halt=off (others enforce)"
    assert overview[2].startswith("symbol DOGEUSDT in modes day, night: warmup=observe ")
    assert PreTradePolicy.default().rules_overview() == ["mode default: all enforce"]
    assert effective_rules(None) == ["mode default: all enforce"] and effective_rules(path) == overview

    for bad, message in (
        ("rules:\n  warmpu: observe\n", "unknown rule 'warmpu'"),
        ("rules:\n  warmup: maybe\n", "use enforce, observe or off"),
        ("rules:\n  modes:\n    lunch: {warmup: off}\n", "lunch not defined"),
    ):
        path.write_text(text + bad, encoding="utf-8")
        with pytest.raises(ModesConfigError, match=message):
            load_modes(path)


async def test_observed_is_encoded_last_so_lines_stay_canonical() -> None:
    # The canonical encoding is the declared field order: event_id first (the outbox reads it
    # there), the optional `observed` last, for events built by the engine's fast constructor.
    lines: list[OutboxLine] = []
    everything = RulesConfig(top={rule.value: RuleState.OBSERVE for rule in GATE_RULES})
    await replay(ExecutionEngine(BacktestExecutor(Rng(0)), policy=policy(everything)), stream(), [list_sink(lines)])
    assert sum(1 for line in lines if b'"observed"' in line.payload) == 25
    for line in lines:
        assert line.payload.startswith(b'{"event_id":"')
        event = orjson.loads(line.payload)
        assert list(event) == [f for f in ExecEvent.model_fields if f in event]  # declared order
        assert set(ExecEvent.model_fields) - set(event) <= {
            "recv_window_ms",
            "attempt",
            "order_type",
            "tif",
            "observed",
        }


def test_the_documented_rules_example_loads(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[2]
    doc = (root / "docs" / "operations.md").read_text(encoding="utf-8")
    section = doc.split("### Rollout switches", 1)[1]
    example = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "modes.yaml"
    path.write_text((root / "examples" / "modes.yaml").read_text(encoding="utf-8") + example, encoding="utf-8")
    rules = load_modes(path).rules
    assert rules.resolve("day").guard("spread_wide") is RuleState.OBSERVE
    assert rules.resolve("day").guard("stale_book") is RuleState.ENFORCE
    assert rules.resolve("storm")[Rule.LOW_CONSISTENCY] is RuleState.ENFORCE
    assert rules.resolve("day", "DOGEUSDT")[Rule.ADAPTIVE_THROTTLE] is RuleState.OFF


def burst_stream() -> list[bytes]:
    """The gate stream, with its ten plain decisions in the same millisecond (a burst)."""
    values = stream()
    return values[:-10] + [
        decision_bytes(signal_row_id=f"burst-{i}", event_ts_ms=T0 + 60_000, ts_ms=T0 + 60_000) for i in range(10)
    ]


@pytest.mark.parametrize("state", list(RuleState))
@pytest.mark.parametrize("rule", [Rule.RATE_WALL, Rule.ADAPTIVE_THROTTLE])
async def test_each_wall_rule_in_each_state_on_the_stream(rule: Rule, state: RuleState) -> None:
    # Two orders/s per symbol, burst two; upstream gated half its window: adaptive rate 1/s, burst 1.
    engine = ExecutionEngine(BacktestExecutor(Rng(0)), policy=policy(RulesConfig(top={rule.value: state}), RATED))
    engine.policy.observe_gate_stats({"spread_wide": 50})
    result = await replay(engine, burst_stream())
    # The gates stop 25 before the wall (and spend no token); the wall sees the burst of ten.
    throttled, observed = {
        (Rule.RATE_WALL, RuleState.ENFORCE): (9, {}),
        (Rule.RATE_WALL, RuleState.OBSERVE): (0, {"rate_wall": 9}),
        (Rule.RATE_WALL, RuleState.OFF): (0, {}),
        (Rule.ADAPTIVE_THROTTLE, RuleState.ENFORCE): (9, {}),
        (Rule.ADAPTIVE_THROTTLE, RuleState.OBSERVE): (8, {"adaptive_throttle": 1}),
        (Rule.ADAPTIVE_THROTTLE, RuleState.OFF): (8, {}),
    }[(rule, state)]
    assert result.orders[OrderStatus.DENIED] == 12
    assert result.orders[OrderStatus.THROTTLED] == 13 + throttled
    assert dict(result.observed) == observed


@pytest.mark.parametrize("wall_state", [RuleState.ENFORCE, RuleState.OBSERVE, RuleState.OFF])
async def test_a_takeover_rebuilds_the_walls_the_rules_asked(wall_state: RuleState) -> None:
    # restore() feeds a rebuilt policy the committed first events: with rules in observe, the walls
    # must end where the live ones did, so the next orders get the same verdicts and observations.
    rules = parse_rules({"rate_wall": wall_state.value, "adaptive_throttle": "observe", "warmup": "observe"}, ["day"])
    lines: list[OutboxLine] = []
    engine = ExecutionEngine(BacktestExecutor(Rng(0)), policy=policy(rules, RATED))
    await replay(engine, burst_stream(), [list_sink(lines)])
    rebuilt = policy(rules, RATED)
    for line in lines:
        rebuilt.restore(decode_json(ExecEvent, line.payload))
    later = [decision_at(T0 + 60_400 + 100 * i, row=f"later-{i}") for i in range(6)]
    live_verdicts = [engine.policy.check(d, f"x{i}").gate for i, d in enumerate(later)]
    rebuilt_verdicts = [rebuilt.check(d, f"x{i}").gate for i, d in enumerate(later)]
    assert live_verdicts == rebuilt_verdicts
    if wall_state is not RuleState.OFF:
        assert any(v.reason or v.observed for v in live_verdicts)  # the walls are not trivially empty
