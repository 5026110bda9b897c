"""Shadow execution without a broker: the comparison, the parity window, `--shadow` parsing, and
the driver beside a primary (the same orders, never the primary's state, bounded when it fails)."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from pathlib import Path

import orjson
import pytest

from tests.factories import decision_bytes
from worker.cli.main import main
from worker.codec.json_codec import decode_json
from worker.contract.enums import OrderStatus
from worker.contract.events import ExecEvent
from worker.contract.messages import Decision, MarketSnapshot
from worker.contract.orders import AmendResult, CancelResult, ExecResult, OrderCtx, SourceRef
from worker.core.backtest import BacktestExecutor
from worker.core.engine import CommandResult, ExecutionEngine, Prepared
from worker.core.fills import QuoteFill
from worker.core.live_market import LiveMarketView
from worker.core.order_table import OrderTable
from worker.core.parity import ParityField, ParityWindow, compare, reason_class
from worker.policy.rng import Rng
from worker.runtime.metrics import WorkerMetrics
from worker.runtime.shadow import ShadowDriver, ShadowSpec, ShadowSpecError, parse_shadow_spec
from worker.runtime.venue import execute, handle

ROOT = Path(__file__).resolve().parents[2]
TICK = Decimal("0.01")


def _decisions(count: int) -> list[Decision]:
    return [
        decode_json(
            Decision,
            decision_bytes(
                signal_row_id=f"row-{i}", event_ts_ms=1_767_225_600_000 + 1_000 * i, ts_ms=1_767_225_600_500
            ),
        )
        for i in range(count)
    ]


def _prepared(engine: ExecutionEngine, book: OrderTable, count: int) -> list[Prepared]:
    out = []
    for i, decision in enumerate(_decisions(count)):
        prepared = engine.prepare(book, decision, SourceRef(topic="decisions", partition=0, offset=i))
        assert prepared.order is not None
        out.append(prepared)
    return out


async def _filled() -> ExecEvent:
    engine = ExecutionEngine(BacktestExecutor(Rng(0)))
    result = await handle(engine, OrderTable(), _decisions(1)[0], SourceRef(topic="d", partition=0, offset=0))
    (event,) = result.events
    assert event.status is OrderStatus.FILLED and event.px_fill is not None
    return event


# -- the comparison ---------------------------------------------------------------------------


async def test_compare_names_each_field_that_differs() -> None:
    primary = await _filled()
    assert primary.px_fill is not None and primary.px_sent is not None
    assert compare(primary, primary, TICK) == ()
    # Within one tick is a match; beyond it is not.
    assert compare(primary, primary.model_copy(update={"px_fill": primary.px_fill + TICK}), TICK) == ()
    over = primary.model_copy(update={"px_fill": primary.px_fill + TICK + Decimal("0.001")})
    assert compare(primary, over, TICK) == (ParityField.FILL_PRICE,)
    moved = primary.model_copy(update={"px_sent": primary.px_sent - TICK})
    assert compare(primary, moved, TICK) == (ParityField.INTENT_PRICE,)
    expired = primary.model_copy(update={"status": OrderStatus.EXPIRED, "px_fill": None})
    assert compare(primary, expired, TICK) == (ParityField.STATUS,)
    assert compare(primary, None, TICK) == (ParityField.UNAVAILABLE,)
    # A shadow venue that could not be reached answers, but says nothing about the order.
    refused = primary.model_copy(update={"status": OrderStatus.REJECTED, "reason": "not_sent:connection refused"})
    assert compare(primary, refused, TICK) == (ParityField.UNAVAILABLE,)
    unknown = primary.model_copy(update={"status": OrderStatus.UNKNOWN, "px_fill": None})
    assert compare(primary, unknown, TICK) == (ParityField.UNAVAILABLE,)


async def test_reject_reasons_compare_by_class_not_free_text() -> None:
    rejected = (await _filled()).model_copy(update={"status": OrderStatus.REJECTED, "px_fill": None})
    a = rejected.model_copy(update={"reason": "venue:-2010:Account has insufficient balance"})
    b = rejected.model_copy(update={"reason": "venue:-2010:insufficient balance for requested action"})
    c = rejected.model_copy(update={"reason": "no_market_data"})
    assert compare(a, b, TICK) == ()
    assert compare(a, c, TICK) == (ParityField.REASON,)
    assert reason_class("not_sent: HTTP 429") == "not_sent"
    assert reason_class(None) == ""


def test_parity_window_slides_over_the_last_n() -> None:
    window = ParityWindow(4)
    assert window.ratio() == 1.0
    for matched in (False, True, True, True):
        window.add(matched)
    assert window.ratio() == 0.75
    window.add(True)  # the mismatch leaves the window
    assert window.ratio() == 1.0 and window.compared == 4
    window.add(False)
    assert window.ratio() == 0.75


# -- --shadow SPEC ----------------------------------------------------------------------------


def test_shadow_specs() -> None:
    assert parse_shadow_spec("backtest:quote") == ShadowSpec("backtest", "quote")
    assert parse_shadow_spec("backtest:fixed_bps:2.5") == ShadowSpec("backtest", "fixed_bps:2.5")
    assert parse_shadow_spec("venue:http://127.0.0.1:8766/") == ShadowSpec("venue", "http://127.0.0.1:8766")
    for bad, says in (
        ("quote", "backtest:MODEL"),
        ("backtest:", "backtest:MODEL"),
        ("backtest:nope", "fill model 'nope'"),
        ("venue:127.0.0.1:8766", "http(s)://HOST"),
        ("testnet:http://x", "unknown kind 'testnet'"),
    ):
        with pytest.raises(ShadowSpecError, match=says.replace("(", r"\(").replace(")", r"\)")):
            parse_shadow_spec(bad)


def test_run_with_a_bad_shadow_exits_2_saying_what_to_fix(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["run", "--topics", str(ROOT / "topics.yaml"), "--outbox", str(tmp_path), "--metrics-port", "0"]
    assert main([*base, "--shadow", "backtest:nope"]) == 2
    assert "fill model 'nope'" in capsys.readouterr().err
    assert main([*base, "--shadow", "sandbox"]) == 2
    assert "use backtest:MODEL" in capsys.readouterr().err
    no_role = tmp_path / "topics.yaml"  # the sandbox demo's file without its shadow_events block
    text = (ROOT / "examples" / "topics-sandbox.yaml").read_text()
    start = text.index("  shadow_events:")
    end = text.index("  dlq:")
    no_role.write_text(text[:start] + text[end:])
    assert main(["run", "--topics", str(no_role), "--outbox", str(tmp_path), "--shadow", "backtest:quote"]) == 2
    assert "needs the `shadow_events` role" in capsys.readouterr().err


# -- the driver -------------------------------------------------------------------------------


def _driver(executor: object, metrics: WorkerMetrics, timeout_s: float = 1.0) -> ShadowDriver:
    engine = ExecutionEngine(executor)  # type: ignore[arg-type]
    return ShadowDriver(engine, metrics, ("exec-shadow.v1", object()), timeout_s=timeout_s)  # type: ignore[arg-type]


class _Owner:
    partition = 0


async def test_the_shadow_gets_the_primarys_orders_and_leaves_its_state_alone() -> None:
    async def primary_run(with_shadow: bool) -> tuple[list[ExecEvent], ShadowDriver, WorkerMetrics]:
        primary = ExecutionEngine(BacktestExecutor(Rng(1)))
        book = OrderTable()
        to_send = _prepared(primary, book, 20)
        metrics = WorkerMetrics()
        driver = _driver(BacktestExecutor(Rng(1)), metrics)
        primary_send = asyncio.gather(*(execute(primary, book, item) for item in to_send))
        if with_shadow:
            sent, batch = await driver.alongside(0, _Owner(), primary_send, to_send)
        else:
            sent, batch = await primary_send, None
        book.commit()
        if batch is not None:
            # Staged until the transaction commits: nothing compared yet.
            assert metrics.registry.get_sample_value("executor_shadow_compared_total") == 0
            assert len(batch.events) == 20
            batch.settle()
        return [e for result in sent for e in result.events], driver, metrics

    alone, _, _ = await primary_run(False)
    shadowed, driver, metrics = await primary_run(True)
    assert shadowed == alone  # byte for byte the same primary events
    assert metrics.registry.get_sample_value("executor_shadow_compared_total") == 20
    assert metrics.registry.get_sample_value("executor_shadow_parity_ratio") == 1.0
    # Its own table: one order each, committed only by `settle`.
    table = driver.book(0, driver._tables[0].owner)
    assert len(table) == 20


async def test_a_shadow_with_another_fill_model_is_measured_not_obeyed() -> None:
    view = LiveMarketView()
    view.add(
        decode_json(
            MarketSnapshot,
            b'{"symbol": "BTCUSDT", "event_time_ms": 1767225599000, "bid": "64000.00", "ask": "64300.00"}',
        )
    )
    primary = ExecutionEngine(BacktestExecutor(Rng(1)))  # fills every limit at its price
    book = OrderTable()
    to_send = _prepared(primary, book, 5)  # BUY 64250.12 < ask 64300: the quote model does not fill
    metrics = WorkerMetrics()
    driver = _driver(BacktestExecutor(Rng(1), fills=QuoteFill(), market=view), metrics)
    sent, batch = await driver.alongside(
        0, _Owner(), asyncio.gather(*(execute(primary, book, item) for item in to_send)), to_send
    )
    batch.settle()
    assert all(r.events[0].status is OrderStatus.FILLED for r in sent)
    assert {e.status for e in batch.events} == {OrderStatus.ACCEPTED}
    assert metrics.registry.get_sample_value("executor_shadow_mismatch_total", {"field": "status"}) == 5
    assert metrics.registry.get_sample_value("executor_shadow_parity_ratio") == 0.0


class _Hanging:
    """A shadow venue that never answers (a black-holed connection)."""

    name = "shadow"
    requires_intent = False

    def __init__(self) -> None:
        self.never = asyncio.Event()

    async def submit(self, order: OrderCtx) -> ExecResult:
        await self.never.wait()
        raise AssertionError("unreachable")

    async def cancel(self, client_order_id: str) -> CancelResult:
        raise ConnectionError("down")

    async def amend(self, client_order_id: str, new_px: Decimal | None, new_qty: Decimal | None) -> AmendResult:
        raise ConnectionError("down")

    async def query(self, client_order_id: str, symbol: str) -> ExecResult | None:
        return None

    async def flush(self) -> None:
        return None

    async def close(self) -> None:
        return None


class _Broken(_Hanging):
    async def submit(self, order: OrderCtx) -> ExecResult:
        raise ConnectionError("connection refused")


@pytest.mark.parametrize("shadow", [_Hanging, _Broken])
async def test_a_failing_shadow_costs_the_primary_at_most_its_timeout(shadow: type[_Hanging]) -> None:
    primary = ExecutionEngine(BacktestExecutor(Rng(1)))
    book = OrderTable()
    to_send = _prepared(primary, book, 8)
    metrics = WorkerMetrics()
    driver = _driver(shadow(), metrics, timeout_s=0.2)
    started = time.monotonic()
    sent, batch = await driver.alongside(
        0, _Owner(), asyncio.gather(*(execute(primary, book, item) for item in to_send)), to_send
    )
    assert time.monotonic() - started < 2.0  # bounded by the timeout (0.2 s), with slack for a loaded box
    assert [r.events[0].status for r in sent] == [OrderStatus.FILLED] * 8  # the primary carried on
    assert batch.events == []
    batch.settle()
    assert metrics.registry.get_sample_value("executor_shadow_mismatch_total", {"field": "unavailable"}) == 8
    assert metrics.registry.get_sample_value("executor_shadow_parity_ratio") == 0.0


async def test_a_batch_that_did_not_commit_is_shadowed_again() -> None:
    primary = ExecutionEngine(BacktestExecutor(Rng(1)))
    owner = _Owner()
    metrics = WorkerMetrics()
    driver = _driver(BacktestExecutor(Rng(1)), metrics)

    async def attempt() -> list[ExecEvent]:
        book = OrderTable()
        to_send = _prepared(primary, book, 3)
        _, batch = await driver.alongside(0, owner, _answered(primary, book, to_send), to_send)
        return batch.events

    first = await attempt()  # its transaction aborted: never settled
    again = await attempt()  # processed again: the shadow's staged orders were dropped
    assert len(first) == len(again) == 3
    # A new owner of the partition (a takeover) starts the shadow's table afresh.
    assert len(driver.book(0, _Owner())) == 0


async def _answered(engine: ExecutionEngine, book: OrderTable, to_send: list[Prepared]) -> list[CommandResult]:
    return [await execute(engine, book, item) for item in to_send]


# -- the live market view ---------------------------------------------------------------------


T0 = 1_767_225_600_000


def _snap(at_ms: int, bid: str) -> MarketSnapshot:
    body = {"symbol": "ETHUSDT", "event_time_ms": T0 + at_ms, "bid": bid, "ask": str(Decimal(bid) + 1)}
    return decode_json(MarketSnapshot, orjson.dumps(body))


def test_live_market_view_answers_as_of_a_time_and_stays_bounded() -> None:
    view = LiveMarketView(keep=3)
    assert view.quote_at("ETHUSDT", T0 + 10) is None
    for at_ms, bid in ((100, "10"), (300, "30"), (200, "20")):  # one arrives late
        view.add(_snap(at_ms, bid))
    assert view.quote_at("ETHUSDT", T0 + 50) is None
    quote = view.quote_at("ETHUSDT", T0 + 250)
    assert quote is not None and quote.bid == Decimal("20")
    for at_ms in range(400, 1000, 100):
        view.add(_snap(at_ms, str(at_ms)))
    assert len(view._times["ETHUSDT"]) <= 6
    latest = view.quote_at("ETHUSDT", T0 + 10_000)
    assert latest is not None and latest.bid == Decimal("900")
