"""Backtest vs venue parity: the same decisions, the same market, the backtest's expected fill
against the sandbox exchange's actual fill (over real HTTP).

Before each order the sandbox's quote is pinned to the market snapshot the backtest uses for that
order (`POST /sandbox/quote`), so the comparison isolates the fill logic. Reported: how many
orders filled in both, the fill-price difference in ticks (p50/p95/max), and status agreement.
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
from worker.contract.messages import Decision, MarketSnapshot
from worker.contract.orders import SourceRef
from worker.execution.backtest import BacktestExecutor
from worker.execution.binance.client import BinanceClient, VenueCredentials
from worker.execution.binance.executor import BinanceExecutor
from worker.execution.engine import ExecutionEngine
from worker.execution.fills import QuoteFill
from worker.execution.latency import LatencyModel
from worker.execution.market import MarketView
from worker.execution.order_state import OrderBook
from worker.policy.clock import WallClock
from worker.policy.rng import Rng
from worker.runtime.summary import percentile
from worker.sandbox.faults import FaultPlan
from worker.sandbox.matching import DEFAULT_SYMBOLS, Market
from worker.sandbox.server import DEFAULT_API_KEY, DEFAULT_API_SECRET, SandboxExchange


@dataclass
class Parity:
    orders: int
    filled_both: int
    status_agreement: float
    diff_ticks_p50: Decimal | None
    diff_ticks_p95: Decimal | None
    diff_ticks_max: Decimal | None

    def to_json(self) -> dict[str, Any]:
        return {k: (format(v, "f") if isinstance(v, Decimal) else v) for k, v in self.__dict__.items()}


async def measure_parity(count: int = 500, seed: int = 91) -> Parity:
    rows = list(decisions(count, seed))
    view = MarketView.from_snapshots(MarketSnapshot.model_validate(s) for s in market_snapshots(rows, seed))
    commands = [Decision.model_validate_json(orjson.dumps(r)) for r in rows]

    # Zero latency: the backtest meets the market exactly at the decision's event time.
    backtest = ExecutionEngine(BacktestExecutor(Rng(0), LatencyModel(0, 0), QuoteFill(), view))
    expected: dict[str, ExecEvent] = {}
    book = OrderBook()
    for index, decision in enumerate(commands):
        result = await backtest.handle(book, decision, SourceRef(topic="parity", partition=0, offset=index))
        expected.update({e.client_order_id: e for e in result.events})

    exchange = SandboxExchange(Market(DEFAULT_SYMBOLS, random.Random(seed)), FaultPlan.parse(None), seed)
    runner = web.AppRunner(exchange.app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    venue = BinanceExecutor(BinanceClient(url, VenueCredentials(DEFAULT_API_KEY, DEFAULT_API_SECRET)), WallClock())
    live = ExecutionEngine(venue, clock=WallClock())
    actual: dict[str, ExecEvent] = {}
    book = OrderBook()
    try:
        async with ClientSession() as admin:
            for index, decision in enumerate(commands):
                quote = view.quote_at(decision.symbol, decision.event_ts_ms)
                if quote is not None:
                    body = {"symbol": decision.symbol, "bid": str(quote.bid), "ask": str(quote.ask)}
                    async with admin.post(f"{url}/sandbox/quote", json=body) as response:
                        response.raise_for_status()
                result = await live.handle(book, decision, SourceRef(topic="parity", partition=0, offset=index))
                actual.update({e.client_order_id: e for e in result.events})
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
        status_agreement=round(agree / len(expected), 4) if expected else 0.0,
        diff_ticks_p50=percentile(diffs, 0.5),
        diff_ticks_p95=percentile(diffs, 0.95),
        diff_ticks_max=diffs[-1] if diffs else None,
    )
