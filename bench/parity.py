"""Backtest vs venue parity: the same decisions, the same market, the backtest's expected fill
against the sandbox exchange's actual fill (over real HTTP).

The market timeline is pinned into the sandbox snapshot by snapshot (`POST /sandbox/quote`), with
each decision sent once market time has reached it, so the comparison isolates the fill logic,
for orders that cross at once and for orders that rest and fill later. Compared per order: the
final status, and for orders filled in both the fill-price difference in ticks (p50/p95/max).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import orjson
from aiohttp import ClientSession, web

from examples.gen_decisions import decisions, market_snapshots
from worker.contract.enums import OrderStatus
from worker.contract.events import ExecEvent
from worker.contract.messages import MarketSnapshot
from worker.contract.orders import SourceRef
from worker.core.backtest import BacktestExecutor
from worker.core.engine import ExecutionEngine
from worker.core.fills import QuoteFill
from worker.core.latency import LatencyModel
from worker.core.market import MarketView
from worker.core.order_table import OrderTable
from worker.io.binance.client import BinanceClient, VenueCredentials
from worker.io.binance.executor import BinanceExecutor
from worker.io.outbox import OutboxLine
from worker.policy.rng import Rng
from worker.reporting.summary import latest_by_order
from worker.runtime.replay import canonical_order, list_sink, replay
from worker.runtime.summary import percentile
from worker.runtime.venue import VenueSync, handle
from worker.sandbox.faults import FaultPlan
from worker.sandbox.limits import Limits
from worker.sandbox.matching import DEFAULT_SYMBOLS, Market
from worker.sandbox.server import DEFAULT_API_KEY, DEFAULT_API_SECRET, SandboxExchange


@dataclass
class Parity:
    orders: int
    filled_both: int
    filled_after_resting: int  # of those, filled by later market data in the backtest
    status_agreement: float
    diff_ticks_p50: Decimal | None
    diff_ticks_p95: Decimal | None
    diff_ticks_max: Decimal | None

    def to_json(self) -> dict[str, Any]:
        return {k: (format(v, "f") if isinstance(v, Decimal) else v) for k, v in self.__dict__.items()}


async def measure_parity(count: int = 500, seed: int = 91) -> Parity:
    rows = list(decisions(count, seed))
    snapshots = sorted(
        (MarketSnapshot.model_validate(s) for s in market_snapshots(rows, seed)), key=lambda s: s.event_time_ms
    )
    view = MarketView.from_snapshots(snapshots)
    values = [orjson.dumps(r) for r in rows]
    commands, _ = canonical_order(values)

    # The backtest: a replay with zero latency, so that every order meets the market exactly at
    # its decision's event time; resting orders fill from the snapshots that follow.
    lines: list[OutboxLine] = []
    backtest = ExecutionEngine(BacktestExecutor(Rng(0), LatencyModel(0, 0), QuoteFill(), view))
    await replay(backtest, values, [list_sink(lines)])
    expected = latest_by_order(ExecEvent.model_validate_json(line.payload) for line in lines)

    # The venue: the same market timeline pinned into the sandbox snapshot by snapshot (each pin
    # also fills resting orders it crosses), the same decisions in the same order in between;
    # what rested is learned at the end by querying the venue, as the worker reconciles.
    exchange = SandboxExchange(
        Market(DEFAULT_SYMBOLS, random.Random(seed)), FaultPlan.parse(None), seed, limits=Limits.unlimited()
    )
    runner = web.AppRunner(exchange.app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    venue = BinanceExecutor(BinanceClient(url, VenueCredentials(DEFAULT_API_KEY, DEFAULT_API_SECRET)))
    live = ExecutionEngine(venue)
    actual: dict[str, ExecEvent] = {}
    book = OrderTable()
    pinned = 0
    try:
        async with ClientSession() as admin:

            async def pin(snapshot: MarketSnapshot) -> None:
                body = {"symbol": snapshot.symbol, "bid": str(snapshot.bid), "ask": str(snapshot.ask)}
                async with admin.post(f"{url}/sandbox/quote", json=body) as response:
                    response.raise_for_status()

            for index, decision in enumerate(commands):
                while pinned < len(snapshots) and snapshots[pinned].event_time_ms <= decision.event_ts_ms:
                    await pin(snapshots[pinned])
                    pinned += 1
                result = await handle(live, book, decision, SourceRef(topic="parity", partition=0, offset=index))
                actual.update({e.client_order_id: e for e in result.events})
            for snapshot in snapshots[pinned:]:
                await pin(snapshot)
            book.commit()
            settled = await VenueSync(live, 4).settle(book)
            actual.update({e.client_order_id: e for e in settled.events})
    finally:
        await venue.close()
        await runner.cleanup()

    diffs: list[Decimal] = []
    agree = 0
    ticks = {d.symbol: d.tick_size for d in commands}
    for coid, want in expected.items():
        got = actual.get(coid)
        if got is None:
            continue
        agree += got.status is want.status
        if want.status is OrderStatus.FILLED and got.status is OrderStatus.FILLED:
            assert want.px_fill is not None and got.px_fill is not None
            diffs.append(abs(want.px_fill - got.px_fill) / ticks[want.symbol])
    diffs.sort()
    return Parity(
        orders=len(expected),
        filled_both=len(diffs),
        filled_after_resting=sum(
            1 for e in expected.values() if e.status is OrderStatus.FILLED and e.event_id[-2:] != ".1"
        ),
        status_agreement=round(agree / len(expected), 4) if expected else 0.0,
        diff_ticks_p50=percentile(diffs, 0.5),
        diff_ticks_p95=percentile(diffs, 0.95),
        diff_ticks_max=diffs[-1] if diffs else None,
    )
