"""The venue's exchangeInfo filters, loaded at start, against each decision's grid (the engine)."""

from __future__ import annotations

from decimal import Decimal

from tests.factories import decision_bytes
from tests.venue.conftest import SandboxFactory
from tests.venue.test_binance_executor import SOURCE, executor, seed_market
from worker.codec.json_codec import decode_json
from worker.contract.enums import OrderStatus
from worker.contract.messages import Decision
from worker.core.engine import EngineConfig, ExecutionEngine
from worker.core.order_table import OrderTable
from worker.core.venue_filters import GridPolicy
from worker.runtime.venue import handle

# BTCUSDT on the sandbox (and Binance): tick 0.01, step 0.00001, min notional 5.
FINE_TICK = {"tick_size": "0.001", "px": "64250.123"}


async def test_a_decision_the_venue_grid_refuses_is_denied_with_the_reason(sandbox_factory: SandboxFactory) -> None:
    sandbox = await sandbox_factory()
    venue = executor(sandbox)
    await venue.start()
    engine = ExecutionEngine(venue, EngineConfig(venue_grid=GridPolicy.DENY))
    prepared = engine.prepare(OrderTable(), decode_json(Decision, decision_bytes(**FINE_TICK)), SOURCE)
    await venue.close()
    (denied,) = prepared.events
    assert (denied.status, denied.reason) == (OrderStatus.DENIED, "venue_filter:tick_size 0.001 vs 0.01")
    assert prepared.order is None and await sandbox.ledger() == {}


async def test_the_venue_grid_policy_moves_the_decision_onto_the_venue_grid(sandbox_factory: SandboxFactory) -> None:
    sandbox = await sandbox_factory()
    await seed_market(sandbox)
    venue = executor(sandbox)
    await venue.start()
    engine = ExecutionEngine(venue, EngineConfig(venue_grid=GridPolicy.VENUE))
    result = await handle(engine, OrderTable(), decode_json(Decision, decision_bytes(**FINE_TICK)), SOURCE)
    await venue.close()
    intent, answer = result.events
    assert intent.px_sent == Decimal("64250.12") and intent.rounding_applied
    assert answer.status is not OrderStatus.REJECTED  # the venue accepts the price it was given


async def test_a_symbol_the_venue_does_not_list_is_denied(sandbox_factory: SandboxFactory) -> None:
    sandbox = await sandbox_factory()
    venue = executor(sandbox)
    await venue.start()
    engine = ExecutionEngine(venue, EngineConfig(venue_grid=GridPolicy.VENUE))
    prepared = engine.prepare(OrderTable(), decode_json(Decision, decision_bytes(symbol="NOPEUSDT")), SOURCE)
    await venue.close()
    assert [(e.status, e.reason) for e in prepared.events] == [(OrderStatus.DENIED, "venue_filter:unknown_symbol")]
