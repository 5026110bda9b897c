from decimal import Decimal

import pytest

from tests.factories import decision_bytes
from worker.codec.json_codec import decode_json, encode_json
from worker.contract.enums import OrderStatus
from worker.contract.messages import Decision
from worker.contract.orders import SourceRef
from worker.core.backtest import BacktestExecutor
from worker.core.engine import ExecutionEngine
from worker.core.order_table import OrderTable
from worker.policy.ids import CLIENT_ORDER_ID_PATTERN
from worker.policy.rng import Rng
from worker.runtime.venue import handle as drive

SOURCE = SourceRef(topic="decisions.v1", partition=0, offset=7)


def engine(seed: int = 1) -> ExecutionEngine:
    return ExecutionEngine(BacktestExecutor(Rng(seed)))


async def handle(book: OrderTable, **fields: object):  # type: ignore[no-untyped-def]
    return await drive(engine(), book, decode_json(Decision, decision_bytes(**fields)), SOURCE)


async def test_a_limit_order_fills_at_the_rounded_price_with_slippage_from_rounding() -> None:
    result = await handle(OrderTable())
    (event,) = result.events
    assert event.status is OrderStatus.FILLED
    assert CLIENT_ORDER_ID_PATTERN.match(event.client_order_id)
    assert event.px_sent == Decimal("64250.12") and event.px_fill == Decimal("64250.12")
    assert event.qty == Decimal("0.01234") and event.qty_filled == event.qty
    assert event.rounding_applied and event.rounding_diff == Decimal("-0.003")
    # Buying 0.003 below the intent is favourable: negative slippage.
    assert event.slippage_bps == Decimal("-0.0005")
    assert event.sent_ts_ms == 1_767_225_600_000
    assert event.ack_ts_ms is not None and event.latency_ms == event.ack_ts_ms - event.sent_ts_ms
    assert event.source == SOURCE


async def test_the_same_decision_twice_produces_one_order() -> None:
    book = OrderTable()
    first = await handle(book)
    second = await handle(book)
    assert len(first.events) == 1
    assert second.events == () and second.dropped == "duplicate"


async def test_a_rolled_back_batch_can_be_processed_again() -> None:
    book = OrderTable()
    first = await handle(book)
    book.rollback()
    again = await handle(book)
    assert encode_json(again.events[0]) == encode_json(first.events[0])


@pytest.mark.parametrize(
    ("fields", "status", "reason"),
    [
        ({"warmup": True}, OrderStatus.DENIED, "warmup"),
        ({"guard_reason": "stale_book"}, OrderStatus.DENIED, "guard:stale_book"),
        ({"weak_signal_throttle": True}, OrderStatus.THROTTLED, "weak_signal"),
        ({"qty": "0.00001", "px": "100"}, OrderStatus.DENIED, "min_notional"),
        ({"order_type": "MARKET", "px": None}, OrderStatus.REJECTED, "no_reference_price"),
    ],
)
async def test_gates_end_the_order_before_any_venue_call(
    fields: dict[str, object], status: OrderStatus, reason: str
) -> None:
    (event,) = (await handle(OrderTable(), **fields)).events
    assert event.status is status and event.reason == reason
    if status is not OrderStatus.REJECTED:
        assert event.sent_ts_ms is None and event.px_sent is None


async def test_low_consistency_sampling_is_deterministic_and_proportional() -> None:
    outcomes = []
    for row in range(400):
        (event,) = (await handle(OrderTable(), signal_row_id=f"r{row}", consistency=0.25)).events
        outcomes.append(event.status)
    again = [
        (await handle(OrderTable(), signal_row_id=f"r{row}", consistency=0.25)).events[0].status for row in range(400)
    ]
    assert outcomes == again
    kept = sum(1 for s in outcomes if s is OrderStatus.FILLED) / len(outcomes)
    # consistency 0.25 against a 0.5 threshold keeps about half.
    assert 0.4 < kept < 0.6


async def test_identical_input_gives_identical_bytes_across_engines() -> None:
    a = await drive(
        ExecutionEngine(BacktestExecutor(Rng(5))), OrderTable(), decode_json(Decision, decision_bytes()), SOURCE
    )
    b = await drive(
        ExecutionEngine(BacktestExecutor(Rng(5))), OrderTable(), decode_json(Decision, decision_bytes()), SOURCE
    )
    c = await drive(
        ExecutionEngine(BacktestExecutor(Rng(6))), OrderTable(), decode_json(Decision, decision_bytes()), SOURCE
    )
    assert encode_json(a.events[0]) == encode_json(b.events[0])
    assert a.events[0].latency_ms is not None
    # A different seed may change only the simulated latency.
    assert a.events[0].model_copy(update={"ack_ts_ms": 0, "latency_ms": 0}) == c.events[0].model_copy(
        update={"ack_ts_ms": 0, "latency_ms": 0}
    )


async def test_cancel_of_an_unknown_or_filled_order_changes_nothing() -> None:
    book = OrderTable()
    (filled,) = (await handle(book)).events
    book.commit()
    unknown = await handle(book, action="CANCEL", target_client_order_id="ew-unknown", signal_row_id="c1")
    done = await handle(book, action="CANCEL", target_client_order_id=filled.client_order_id, signal_row_id="c2")
    assert unknown.dropped == "unknown_target" and done.dropped == "target_terminal"
    record = book.get(filled.client_order_id)
    assert record is not None and record.status is OrderStatus.FILLED


async def test_every_event_of_the_sample_is_valid_against_the_contract() -> None:
    # The engine builds events without re-validation (contract.trusted); prove that is safe.
    import orjson

    from examples.gen_decisions import decisions
    from worker.contract.events import ExecEvent

    book, statuses = OrderTable(), set()
    for offset, raw in enumerate(decisions(1500, seed=3)):
        source = SourceRef(topic="decisions.v1", partition=0, offset=offset)
        result = await drive(engine(), book, decode_json(Decision, orjson.dumps(raw)), source)
        for event in result.events:
            wire = encode_json(event)
            assert ExecEvent.model_validate_json(wire) == event
            assert encode_json(ExecEvent.model_validate_json(wire)) == wire
            statuses.add(event.status)
    assert {OrderStatus.FILLED, OrderStatus.DENIED, OrderStatus.THROTTLED, OrderStatus.REJECTED} <= statuses


def test_a_live_intent_event_is_canonical_json_starting_with_its_event_id() -> None:
    # Intents carry optional fields (recv_window_ms, attempt, ...) with defaults; built without
    # validation they must still serialize in declared order: the outbox finds an event's id at
    # the start of its line (a line starting otherwise failed every later publish to its file,
    # and so every takeover's outbox catch-up).
    from worker.contract.events import ExecEvent
    from worker.io.binance.client import BinanceClient, VenueCredentials
    from worker.io.binance.executor import BinanceExecutor
    from worker.io.outbox import event_id_of

    live = ExecutionEngine(BinanceExecutor(BinanceClient("http://127.0.0.1:1", VenueCredentials("k", "s"))))
    prepared = live.prepare(OrderTable(), decode_json(Decision, decision_bytes()), SOURCE)
    (intent,) = prepared.events
    assert intent.status is OrderStatus.SUBMITTED and intent.recv_window_ms == 5_000 and intent.attempt == 1
    wire = encode_json(intent)
    assert event_id_of(wire) == intent.event_id
    assert encode_json(ExecEvent.model_validate_json(wire)) == wire
