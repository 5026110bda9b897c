from datetime import datetime, time
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from worker.policy.modes import MarketTrigger, ModeManager, ScenarioParams, Window
from worker.policy.throttle import OrderRateWall, RateLimits, TokenBucket, adaptive_factor

NY = ZoneInfo("America/New_York")
PARAMS = ScenarioParams(Decimal(2), Decimal(30), Decimal(20), Decimal(6), Decimal("0.01"), 5.0, 20.0)


def ms(year: int, month: int, day: int, hour: int, minute: int, tz: ZoneInfo = NY, fold: int = 0) -> int:
    return int(datetime(year, month, day, hour, minute, tzinfo=tz, fold=fold).timestamp() * 1000)


def manager(**kwargs: object) -> ModeManager:
    modes = {"day": PARAMS, "night": PARAMS, "storm": PARAMS}
    return ModeManager(timezone=NY, modes=modes, default="day", **kwargs)  # type: ignore[arg-type]


def test_a_window_wrapping_midnight_in_new_york() -> None:
    night = Window(time(22, 0), time(2, 0), weekdays=frozenset({4}))  # starts Fridays
    mgr = manager(schedule=[(night, "night")])
    friday_late = ms(2026, 6, 5, 23, 30)  # Friday 23:30 EDT = Saturday 03:30 UTC
    saturday_early = ms(2026, 6, 6, 1, 59)  # the same window, after midnight
    saturday_late = ms(2026, 6, 6, 23, 0)  # Saturday's window does not exist
    assert (mgr.evaluate(friday_late) or None) is not None and mgr.current == "night"
    assert mgr.evaluate(saturday_early) is None and mgr.current == "night"
    switch = mgr.evaluate(ms(2026, 6, 6, 2, 0))
    assert switch is not None and (switch.old, switch.new, switch.trigger) == ("night", "day", "default")
    assert mgr.evaluate(saturday_late) is None and mgr.current == "day"


def test_spring_forward_skips_a_window_inside_the_missing_hour() -> None:
    # 2026-03-08: New York clocks jump from 02:00 to 03:00.
    gap = Window(time(2, 15), time(2, 45))
    mgr = manager(schedule=[(gap, "night")])
    start = ms(2026, 3, 8, 1, 0)
    for minute in range(0, 180):  # every minute from 01:00 EST for three real hours
        mgr.evaluate(start + minute * 60_000)
        assert mgr.current == "day"


def test_fall_back_matches_the_repeated_hour_twice() -> None:
    # 2026-11-01: New York clocks fall back from 02:00 EDT to 01:00 EST; 01:30 happens twice.
    repeated = Window(time(1, 15), time(1, 45))
    mgr = manager(schedule=[(repeated, "night")])
    first = ms(2026, 11, 1, 1, 30, fold=0)
    second = ms(2026, 11, 1, 1, 30, fold=1)
    assert second - first == 3_600_000  # one real hour apart
    assert mgr.evaluate(first) is not None and mgr.current == "night"
    assert mgr.evaluate(first + 20 * 60_000) is not None and mgr.current == "day"
    assert mgr.evaluate(second) is not None and mgr.current == "night"


def test_market_trigger_hysteresis_at_the_thresholds() -> None:
    mgr = manager(market=MarketTrigger("storm", on_at=10.0, off_at=5.0))
    now = ms(2026, 6, 1, 12, 0)
    assert mgr.evaluate(now, activity=9.99) is None
    switch = mgr.evaluate(now, activity=10.0)  # exactly at on_at: on
    assert switch is not None and (switch.new, switch.trigger) == ("storm", "market")
    assert mgr.evaluate(now, activity=7.0) is None  # between: stays on
    assert mgr.evaluate(now, activity=5.01) is None
    off = mgr.evaluate(now, activity=5.0)  # exactly at off_at: off
    assert off is not None and off.new == "day"


def test_market_beats_schedule_and_explicit_beats_both() -> None:
    mgr = manager(schedule=[(Window(time(0, 0), time(23, 59)), "night")], market=MarketTrigger("storm", 10, 5))
    now = ms(2026, 6, 1, 12, 0)
    mgr.evaluate(now)
    assert mgr.current == "night"
    mgr.evaluate(now, activity=11)
    assert mgr.current == "storm"
    mgr.set_explicit("day")
    switch = mgr.evaluate(now, activity=11)
    assert switch is not None and switch.trigger == "explicit" and mgr.current == "day"


def test_misconfiguration_is_refused() -> None:
    with pytest.raises(ValueError, match="not defined"):
        manager(schedule=[(Window(time(1, 0), time(2, 0)), "lunch")])
    with pytest.raises(ValueError, match="hysteresis"):
        MarketTrigger("storm", on_at=5, off_at=5)


def test_token_bucket_bursts_then_refills_on_sim_time() -> None:
    bucket = TokenBucket(rate_per_s=2.0, burst=2.0)
    assert [bucket.take(1_000) for _ in range(3)] == [True, True, False]
    assert bucket.take(1_400) is False  # 0.8 tokens
    assert bucket.take(1_500) is True  # 1.0 token after 500 ms at 2/s
    assert bucket.take(1_000) is False  # time going backwards adds nothing


def test_rate_wall_symbol_then_global_and_adaptive_factor() -> None:
    wall = OrderRateWall(RateLimits(per_symbol_per_s=2, global_per_s=3, burst_s=1))
    outcomes = [wall.admit(symbol, 0) for symbol in ("A", "A", "A", "B", "C")]
    assert outcomes == [None, None, "rate_symbol", None, "rate_global"]
    wall.configure(RateLimits(per_symbol_per_s=2, global_per_s=3, burst_s=1), factor=0.5)
    assert wall.admit("D", 10_000) is None and wall.admit("D", 10_000) == "rate_symbol"  # burst 1 at half rate
    assert adaptive_factor({"spread_wide": 30}, 100) == pytest.approx(0.7)
    assert adaptive_factor({"stale": 100}, 100) == pytest.approx(0.2)  # floor
    assert adaptive_factor({}, 0) == 1.0


def test_sim_time_makes_throttling_reproducible() -> None:
    def run() -> list[str | None]:
        wall = OrderRateWall(RateLimits(per_symbol_per_s=1, global_per_s=100))
        return [wall.admit("A", t) for t in range(0, 5_000, 250)]

    assert run() == run()


def test_upstream_gate_stats_tighten_the_wall() -> None:
    from tests.factories import decision_bytes
    from worker.codec.json_codec import decode_json
    from worker.contract.messages import Decision
    from worker.policy.pretrade import PreTradePolicy

    manager = ModeManager(NY, {"day": PARAMS}, "day")  # 5 orders/s per symbol
    policy = PreTradePolicy(manager)
    decision = decode_json(Decision, decision_bytes())
    admitted = [policy.check(decision, f"id{i}").gate.reason for i in range(6)]
    assert admitted.count(None) == 5
    policy.observe_gate_stats({"spread_wide": 60})  # upstream gated 60% of its window: 40% of the rate
    later = decode_json(Decision, decision_bytes(event_ts_ms=decision.event_ts_ms + 10_000))
    assert [policy.check(later, f"late{i}").gate.reason for i in range(3)] == [None, None, "rate_symbol"]
