"""The sandbox venue's delivery faults, clock and rate limits, over real HTTP with signed requests
(no worker code: these pin down what the venue does, whatever the client)."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest
from aiohttp import ClientSession, ClientTimeout

from tests.venue.conftest import RunningSandbox, SandboxFactory
from worker.cli.main import main
from worker.io.binance.protocol import API_KEY_HEADER, signed_query
from worker.sandbox.faults import Draw, Fault, FaultPlan, FaultSpecError
from worker.sandbox.limits import Limits
from worker.sandbox.server import DEFAULT_API_KEY, DEFAULT_API_SECRET

T0 = 1_790_000_080.0  # a fixed local clock: 40 s into a minute, at the start of a 10 s window


class FakeClock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


Answer = tuple[int, dict[str, Any], dict[str, str]]


async def call(
    sandbox: RunningSandbox,
    method: str,
    path: str,
    params: dict[str, str],
    timestamp_ms: int,
    recv_window_ms: int = 5_000,
    timeout_s: float = 5.0,
) -> Answer:
    """One signed request, as a client whose clock reads `timestamp_ms`."""
    query = signed_query(
        {**params, "recvWindow": str(recv_window_ms), "timestamp": str(timestamp_ms)}, DEFAULT_API_SECRET
    )
    async with (
        ClientSession(timeout=ClientTimeout(total=timeout_s), headers={API_KEY_HEADER: DEFAULT_API_KEY}) as session,
        session.request(method, f"{sandbox.url}{path}?{query}") as response,
    ):
        return response.status, await response.json(content_type=None), dict(response.headers)


def limit_order(coid: str, tif: str = "GTC", px: str = "64250.00") -> dict[str, str]:
    return {
        "symbol": "BTCUSDT",
        "side": "BUY",
        "type": "LIMIT",
        "timeInForce": tif,
        "quantity": "0.01000",
        "price": px,
        "newClientOrderId": coid,
    }


def query(coid: str) -> dict[str, str]:
    return {"symbol": "BTCUSDT", "origClientOrderId": coid}


# -- late -----------------------------------------------------------------------------------------


async def test_a_late_post_is_executed_after_the_client_gave_up_and_its_query_said_unknown(
    sandbox_factory: SandboxFactory,
) -> None:
    clock = FakeClock()
    sandbox = await sandbox_factory(faults="script=late,late_hold=0.5s", clock=clock)
    now = int(T0 * 1000)
    with pytest.raises(TimeoutError):
        await call(sandbox, "POST", "/api/v3/order", limit_order("late-1"), now, timeout_s=0.1)
    # The client's follow-up query arrives first: the venue does not know the order yet.
    status, body, _ = await call(sandbox, "GET", "/api/v3/order", query("late-1"), now)
    assert (status, body["code"]) == (400, -2013)
    await sandbox.exchange.settle()
    status, body, _ = await call(sandbox, "GET", "/api/v3/order", query("late-1"), now)
    assert (status, body["status"]) == (200, "NEW")
    entry = (await sandbox.ledger())["late-1"]
    assert (entry["submits"], entry["accepts"], entry["late_accepts"], entry["copy_accepts"]) == (1, 1, 1, 0)
    assert sandbox.exchange.fault_counts == {"late": 1}
    assert sandbox.exchange.processed["late"] == {"ok": 1}


async def test_a_late_post_processed_after_its_recv_window_is_refused_and_changes_nothing(
    sandbox_factory: SandboxFactory,
) -> None:
    clock = FakeClock()
    sandbox = await sandbox_factory(faults="script=late,late_hold=0.3s", clock=clock)
    sent = int(T0 * 1000)
    with pytest.raises(TimeoutError):
        await call(sandbox, "POST", "/api/v3/order", limit_order("late-2"), sent, recv_window_ms=2_000, timeout_s=0.1)
    clock.now += 2.001  # the venue's clock passes timestamp + recvWindow while the request is held
    await sandbox.exchange.settle()
    assert await sandbox.ledger() == {}
    assert sandbox.exchange.processed["late"] == {"-1021": 1}
    status, body, _ = await call(sandbox, "GET", "/api/v3/order", query("late-2"), sent + 2_001)
    assert (status, body["code"]) == (400, -2013)


async def test_a_late_post_inside_its_recv_window_is_accepted_even_after_the_order_was_resent(
    sandbox_factory: SandboxFactory,
) -> None:
    """The hole of issue 10: query says unknown, the client resends, the late original lands too."""
    clock = FakeClock()
    sandbox = await sandbox_factory(faults="script=late;none;none,late_hold=0.5s", clock=clock)
    now = int(T0 * 1000)
    ioc = limit_order("late-3", tif="IOC", px="1000.00")  # far from the market: expires at once
    with pytest.raises(TimeoutError):
        await call(sandbox, "POST", "/api/v3/order", ioc, now, timeout_s=0.1)
    assert (await call(sandbox, "GET", "/api/v3/order", query("late-3"), now))[1]["code"] == -2013
    status, body, _ = await call(sandbox, "POST", "/api/v3/order", ioc, now)
    assert (status, body["status"]) == (200, "EXPIRED")
    await sandbox.exchange.settle()
    entry = (await sandbox.ledger())["late-3"]
    assert (entry["submits"], entry["accepts"], entry["late_accepts"]) == (2, 2, 1)


# -- duplicate ------------------------------------------------------------------------------------


async def test_a_duplicate_copy_of_an_open_gtc_order_is_refused_as_a_duplicate(
    sandbox_factory: SandboxFactory,
) -> None:
    sandbox = await sandbox_factory(faults="script=duplicate,dup_delay=0.05s", clock=FakeClock())
    status, body, _ = await call(sandbox, "POST", "/api/v3/order", limit_order("dup-1"), int(T0 * 1000))
    assert (status, body["status"]) == (200, "NEW")
    await sandbox.exchange.settle()
    entry = (await sandbox.ledger())["dup-1"]
    assert (entry["submits"], entry["accepts"], entry["copy_accepts"]) == (2, 1, 0)
    assert sandbox.exchange.processed["copy"] == {"-2010": 1}


async def test_a_duplicate_copy_of_a_finished_order_within_its_recv_window_is_accepted_again(
    sandbox_factory: SandboxFactory,
) -> None:
    """What Binance does too: the id is free once its order is no longer open."""
    sandbox = await sandbox_factory(faults="script=duplicate,dup_delay=0.05s", clock=FakeClock())
    ioc = limit_order("dup-2", tif="IOC", px="1000.00")
    status, body, _ = await call(sandbox, "POST", "/api/v3/order", ioc, int(T0 * 1000))
    assert (status, body["status"]) == (200, "EXPIRED")
    await sandbox.exchange.settle()
    entry = (await sandbox.ledger())["dup-2"]
    assert (entry["submits"], entry["accepts"], entry["copy_accepts"]) == (2, 2, 1)
    assert entry["accepts"] - entry["copy_accepts"] == 1  # the client itself was accepted once


async def test_a_duplicate_copy_after_the_recv_window_expires(sandbox_factory: SandboxFactory) -> None:
    clock = FakeClock()
    sandbox = await sandbox_factory(faults="script=duplicate,dup_delay=0.2s", clock=clock)
    ioc = limit_order("dup-3", tif="IOC", px="1000.00")
    status, _, _ = await call(sandbox, "POST", "/api/v3/order", ioc, int(T0 * 1000), recv_window_ms=1_000)
    assert status == 200
    clock.now += 1.5
    await sandbox.exchange.settle()
    entry = (await sandbox.ledger())["dup-3"]
    assert (entry["submits"], entry["accepts"], entry["copy_accepts"]) == (1, 1, 0)
    assert sandbox.exchange.processed["copy"] == {"-1021": 1}


# -- lost answer ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["lost_answer", "timeout_after"])
async def test_a_lost_answer_order_is_executed_and_the_client_sees_nothing(
    sandbox_factory: SandboxFactory, name: str
) -> None:
    sandbox = await sandbox_factory(faults=f"script={name},hang=0.3s", clock=FakeClock())
    with pytest.raises(TimeoutError):
        await call(sandbox, "POST", "/api/v3/order", limit_order("lost-1"), int(T0 * 1000), timeout_s=0.1)
    entry = (await sandbox.ledger())["lost-1"]
    assert (entry["submits"], entry["accepts"]) == (1, 1)
    assert sandbox.exchange.fault_counts == {name: 1}


# -- clock ----------------------------------------------------------------------------------------


async def test_skew_moves_the_venue_clock_for_time_timestamps_and_transact_time(
    sandbox_factory: SandboxFactory,
) -> None:
    sandbox = await sandbox_factory(faults="skew=-3000ms", clock=FakeClock())
    local = int(T0 * 1000)
    async with ClientSession() as session, session.get(f"{sandbox.url}/api/v3/time") as response:
        assert (await response.json())["serverTime"] == local - 3_000
    # Signed with the local clock, the request is 3 s ahead of the venue: Binance refuses it.
    status, body, _ = await call(sandbox, "POST", "/api/v3/order", limit_order("skew-1"), local)
    assert (status, body["code"]) == (400, -1021)
    assert "ahead" in body["msg"]
    # Signed with the venue's clock (as a client that measured the offset), it is accepted.
    status, body, _ = await call(sandbox, "POST", "/api/v3/order", limit_order("skew-1"), local - 3_000)
    assert (status, body["transactTime"]) == (200, local - 3_000)


async def test_the_timing_rule_is_binances(sandbox_factory: SandboxFactory) -> None:
    sandbox = await sandbox_factory(clock=FakeClock())
    now = int(T0 * 1000)
    ok = await call(sandbox, "GET", "/api/v3/order", query("x"), now + 999)  # < serverTime + 1000
    ahead = await call(sandbox, "GET", "/api/v3/order", query("x"), now + 1_000)
    edge = await call(sandbox, "GET", "/api/v3/order", query("x"), now - 5_000)  # now - ts == recvWindow
    late = await call(sandbox, "GET", "/api/v3/order", query("x"), now - 5_001)
    too_wide = await call(sandbox, "GET", "/api/v3/order", query("x"), now, recv_window_ms=60_001)
    assert [a[1]["code"] for a in (ok, ahead, edge, late, too_wide)] == [-2013, -1021, -2013, -1021, -1131]


# -- rate limits ----------------------------------------------------------------------------------


async def test_binance_default_limits_answer_429_past_6000_weight_then_418(sandbox_factory: SandboxFactory) -> None:
    clock = FakeClock()
    sandbox = await sandbox_factory(clock=clock)
    async with ClientSession() as session:

        async def info() -> tuple[int, dict[str, str]]:
            async with session.get(f"{sandbox.url}/api/v3/exchangeInfo") as response:
                await response.read()
                return response.status, dict(response.headers)

        statuses = [(await info())[0] for _ in range(300)]  # 300 x weight 20 = 6,000: the limit
        assert set(statuses) == {200}
        status, headers = await info()
        assert (status, headers["X-MBX-USED-WEIGHT-1M"], headers["Retry-After"]) == (429, "6020", "20")
        # Not backing off: the 5th request sent during the Retry-After gets the IP banned.
        assert [(await info())[0] for _ in range(5)] == [429, 429, 429, 429, 418]
        clock.now += 30  # a new minute, but the ban (2 min) is not over: every endpoint refuses
        async with session.get(f"{sandbox.url}/api/v3/time") as response:
            assert (response.status, response.headers["Retry-After"]) == (418, "90")
        clock.now += 91
        assert (await info())[0] == 200
    published = (await _json(sandbox, "/api/v3/exchangeInfo"))["rateLimits"]
    assert [(r["rateLimitType"], r["interval"], r["intervalNum"], r["limit"]) for r in published] == [
        ("REQUEST_WEIGHT", "MINUTE", 1, 6_000),
        ("ORDERS", "SECOND", 10, 50),
        ("ORDERS", "DAY", 1, 160_000),
    ]


async def test_binance_default_limits_refuse_the_51st_unfilled_order_in_10_seconds(
    sandbox_factory: SandboxFactory,
) -> None:
    clock = FakeClock()
    sandbox = await sandbox_factory(clock=clock)
    now = int(T0 * 1000)
    for index in range(50):  # resting GTC orders: unfilled, they count
        status, _, headers = await call(sandbox, "POST", "/api/v3/order", limit_order(f"o{index}"), now)
        assert status == 200
    assert headers["X-MBX-ORDER-COUNT-10S"] == "50"
    status, body, headers = await call(sandbox, "POST", "/api/v3/order", limit_order("o50"), now)
    assert (status, body["code"], headers["Retry-After"]) == (429, -1015, "10")
    assert "o50" not in await sandbox.ledger()
    clock.now += 10
    status, _, headers = await call(sandbox, "POST", "/api/v3/order", limit_order("o50"), now + 10_000)
    assert (status, headers["X-MBX-ORDER-COUNT-10S"], headers["X-MBX-ORDER-COUNT-1D"]) == (200, "1", "51")


async def test_filled_orders_come_off_the_unfilled_order_count(sandbox_factory: SandboxFactory) -> None:
    sandbox = await sandbox_factory(clock=FakeClock())
    now = int(T0 * 1000)
    status, _, headers = await call(sandbox, "POST", "/api/v3/order", limit_order("resting"), now)  # sets the quote
    assert headers["X-MBX-ORDER-COUNT-10S"] == "1"
    for index in range(60):  # market orders fill on arrival: each adds one and takes it off again
        market = {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": "0.01000"}
        status, body, headers = await call(
            sandbox, "POST", "/api/v3/order", {**market, "newClientOrderId": f"m{index}"}, now
        )
        assert (status, body["status"]) == (200, "FILLED")
    assert headers["X-MBX-ORDER-COUNT-10S"] == "1"


async def test_unlimited_and_custom_limits(sandbox_factory: SandboxFactory) -> None:
    sandbox = await sandbox_factory(limits=Limits.parse("40,2"), clock=FakeClock())
    async with ClientSession() as session:
        statuses = []
        for _ in range(3):
            async with session.get(f"{sandbox.url}/api/v3/exchangeInfo") as response:
                statuses.append(response.status)
    assert statuses == [200, 200, 429]
    assert Limits.parse("unlimited").weight_per_minute >= 10**9
    assert Limits.parse("binance") == Limits() == Limits(6_000, 50, 160_000)
    assert Limits.parse("100,5,7") == Limits(100, 5, 7)
    for bad in ("fast", "1", "1,2,3,4", "0,5", "a,b"):
        with pytest.raises(ValueError, match="expected binance, unlimited"):
            Limits.parse(bad)


async def _json(sandbox: RunningSandbox, path: str) -> dict[str, Any]:
    async with ClientSession() as session, session.get(f"{sandbox.url}{path}") as response:
        body: dict[str, Any] = await response.json()
        return body


# -- the fault spec -------------------------------------------------------------------------------


def test_fault_spec_parses_the_delivery_faults_and_their_timings() -> None:
    plan = FaultPlan.parse("late=0.1,duplicate=0.2,lost_answer=0.05,late_hold=1-2s,dup_delay=0.5s,skew=+250ms")
    assert plan.probabilities == {Fault.LATE: 0.1, Fault.DUPLICATE: 0.2, Fault.LOST_ANSWER: 0.05}
    assert (plan.late_hold_s, plan.dup_delay_s, plan.skew_ms) == ((1.0, 2.0), (0.5, 0.5), 250)
    assert FaultPlan.parse("").late_hold_s == (2.5, 4.5)
    assert FaultPlan.parse("skew=-40ms").skew_ms == -40
    for bad in ("late=2", "late_hold=4-2s", "skew=fast", "sometimes=0.1", "late"):
        with pytest.raises(FaultSpecError):
            FaultPlan.parse(bad)


def test_fault_draws_are_seeded_with_their_holds_and_delays() -> None:
    plan = FaultPlan.parse("late=0.3,duplicate=0.3,late_hold=2.5-4.5s,dup_delay=1-2s,latency=1-5ms")

    def draws(seed: int) -> list[Draw]:
        rng = random.Random(seed)
        return [plan.draw(rng, n) for n in range(200)]

    first = draws(7)
    assert first == draws(7) and first != draws(8)
    late = [d.after_s for d in first if d.fault is Fault.LATE]
    copies = [d.after_s for d in first if d.fault is Fault.DUPLICATE]
    assert late and copies
    assert all(2.5 <= s <= 4.5 for s in late) and all(1 <= s <= 2 for s in copies)
    assert all(d.after_s == 0 for d in first if d.fault is None)


def test_adding_fault_kinds_keeps_the_draws_of_an_old_spec() -> None:
    """A spec without the new faults meets the same faults as before they existed."""
    plan = FaultPlan.parse("timeout_after=0.2,5xx=0.2,drop=0.1")
    rng = random.Random(3)
    kinds = [plan.draw(rng, n).fault for n in range(12)]
    rng = random.Random(3)
    expected = []
    for _ in range(12):
        fault = None
        for candidate, probability in ((Fault.TIMEOUT_AFTER, 0.2), (Fault.ERROR_5XX, 0.2), (Fault.DROP, 0.1)):
            if rng.random() < probability:
                fault = candidate
                break
        expected.append(fault)
    assert kinds == expected


async def test_pending_late_deliveries_are_cancelled_at_shutdown(sandbox_factory: SandboxFactory) -> None:
    sandbox = await sandbox_factory(faults="script=late,late_hold=30s", clock=FakeClock())
    with pytest.raises(TimeoutError):
        await call(sandbox, "POST", "/api/v3/order", limit_order("held"), int(T0 * 1000), timeout_s=0.1)
    assert len(sandbox.exchange._pending) == 1
    await asyncio.sleep(0)  # the fixture's cleanup cancels it; the test must not take 30 s


@pytest.mark.parametrize(("flag", "value"), [("--limits", "fast"), ("--faults", "late=0.1,late_hold=5-1s")])
def test_the_cli_refuses_bad_limits_and_fault_specs(flag: str, value: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sandbox-exchange", "--port", "0", flag, value]) == 2
    assert f"{flag}" in capsys.readouterr().err
