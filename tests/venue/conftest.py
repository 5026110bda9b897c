"""An in-process sandbox exchange on a free 127.0.0.1 port, over real HTTP."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest
from aiohttp import ClientSession, web

from worker.sandbox.faults import FaultPlan
from worker.sandbox.limits import Limits
from worker.sandbox.matching import DEFAULT_SYMBOLS, Market
from worker.sandbox.server import SandboxExchange


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/venue/" in str(item.fspath):
            item.add_marker(pytest.mark.unit)


@dataclass
class RunningSandbox:
    exchange: SandboxExchange
    url: str

    async def ledger(self) -> dict[str, dict[str, object]]:
        async with ClientSession() as session, session.get(f"{self.url}/sandbox/ledger") as response:
            body = await response.json()
        return {entry["client_order_id"]: entry for entry in body["orders"]}


SandboxFactory = Callable[..., Awaitable[RunningSandbox]]


@pytest.fixture
async def sandbox_factory() -> AsyncIterator[SandboxFactory]:
    runners: list[web.AppRunner] = []

    async def start(
        faults: str | None = None,
        seed: int = 0,
        limits: Limits | None = None,
        clock: Callable[[], float] | None = None,
    ) -> RunningSandbox:
        """A sandbox with Binance's rate limits unless `limits` says otherwise."""
        market = Market(DEFAULT_SYMBOLS, random.Random(seed))
        exchange = SandboxExchange(market, FaultPlan.parse(faults), seed, limits=limits, clock=clock)
        runner = web.AppRunner(exchange.app(), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        return RunningSandbox(exchange, f"http://127.0.0.1:{runner.addresses[0][1]}")

    yield start
    for runner in runners:
        await runner.cleanup()
