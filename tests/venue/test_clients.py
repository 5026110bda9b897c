"""Binance clients nobody here wrote drive the sandbox: Binance's own `binance-connector` and ccxt.

Both are pinned (requirements.lock). Every URL they know is pointed at the sandbox on 127.0.0.1
before the first call, and `loopback_only` makes any other address fail in the test: name
resolution of anything but a loopback name and connects to anything but 127.0.0.0/8 or ::1 are
refused before a packet leaves, and every attempt is recorded and checked.
A recording middleware shows how each client sent its parameters: binance-connector signs the
query string, ccxt signs the form body of a POST.
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

import binance.api
import ccxt.async_support as ccxt
import pytest
from aiohttp import web
from binance.error import ClientError
from binance.spot import Spot

from worker.sandbox.faults import FaultPlan
from worker.sandbox.limits import Limits
from worker.sandbox.matching import Market
from worker.sandbox.server import DEFAULT_API_KEY, DEFAULT_API_SECRET, SandboxExchange
from worker.sandbox.symbols import DEFAULT_LISTINGS

LOOPBACK_NAMES = {"127.0.0.1", "localhost", "::1"}


def _is_loopback(address: Any) -> bool:
    host = address[0] if isinstance(address, tuple) else address
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@pytest.fixture
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, Any]]]:
    """Refuses (and records) every resolution or connection that is not to the loopback."""
    attempts: list[tuple[str, Any]] = []
    real_getaddrinfo = socket.getaddrinfo
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        attempts.append(("resolve", host))
        if host not in LOOPBACK_NAMES:
            raise OSError(f"loopback_only: refused to resolve {host!r}")
        return real_getaddrinfo(host, *args, **kwargs)

    def connect(self: socket.socket, address: Any) -> None:
        attempts.append(("connect", address))
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address):
            raise ConnectionRefusedError(f"loopback_only: refused to connect to {address!r}")
        real_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        attempts.append(("connect", address))
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address):
            raise ConnectionRefusedError(f"loopback_only: refused to connect to {address!r}")
        return real_connect_ex(self, address)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    with pytest.raises(OSError, match="loopback_only"):
        socket.getaddrinfo("api.binance.com", 443)  # the guard is in place (refused before any lookup)
    attempts.clear()
    yield attempts
    assert attempts, "no connection was made at all: the guard saw nothing"
    outside = [a for a in attempts if not (_is_loopback(a[1]) or a[1] in LOOPBACK_NAMES)]
    assert outside == [], f"a client tried to reach another host: {outside}"


@dataclass
class Seen:
    method: str
    path: str
    query: str
    body: str


@dataclass
class Venue:
    exchange: SandboxExchange
    url: str
    seen: list[Seen] = field(default_factory=list)


@pytest.fixture
async def venue() -> AsyncIterator[Venue]:
    market = Market(tuple(x.spec for x in DEFAULT_LISTINGS), random.Random(0))
    market.set_quote("BTCUSDT", Decimal("64000.00"), Decimal("64001.00"))
    exchange = SandboxExchange(market, FaultPlan.parse(None), 0, limits=Limits())  # Binance's own limits
    seen: list[Seen] = []

    @web.middleware
    async def record(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> Any:
        body = (await request.read()).decode() if request.body_exists else ""
        seen.append(Seen(request.method, request.path, request.raw_path.partition("?")[2], body))
        return await handler(request)

    app = exchange.app()
    app.middlewares.append(record)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    yield Venue(exchange, f"http://127.0.0.1:{runner.addresses[0][1]}", seen)
    await runner.cleanup()


# -- binance-connector (Binance's own Python connector; synchronous, run in a thread) -------------


async def call(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return await asyncio.to_thread(function, *args, **kwargs)


async def test_binance_connector_places_queries_cancels_and_reads_balances(
    venue: Venue, loopback_only: list[tuple[str, Any]]
) -> None:
    client = Spot(api_key=DEFAULT_API_KEY, api_secret=DEFAULT_API_SECRET, base_url=venue.url, show_limit_usage=True)
    server_time = (await call(client.time))["data"]["serverTime"]
    assert abs(server_time - time.time() * 1000) < 5_000
    info = (await call(client.exchange_info, symbol="BTCUSDT"))["data"]
    assert info["symbols"][0]["baseAsset"] == "BTC"

    before = await balances_via_connector(client)
    resting = (
        await call(
            client.new_order,
            "BTCUSDT",
            "BUY",
            "LIMIT",
            timeInForce="GTC",
            quantity="0.01",
            price="63000.00",
            newClientOrderId="bc-rest",
        )
    )["data"]
    assert resting["status"] == "NEW"
    post = next(s for s in venue.seen if s.method == "POST")
    assert "signature=" in post.query and post.body == ""  # binance-connector signs the query string

    filled = (
        await call(client.new_order, "BTCUSDT", "SELL", "LIMIT", timeInForce="IOC", quantity="0.02", price="63900.00")
    )["data"]
    assert (filled["status"], Decimal(filled["executedQty"])) == ("FILLED", Decimal("0.02"))

    by_id = (await call(client.get_order, "BTCUSDT", orderId=resting["orderId"]))["data"]
    by_client_id = (await call(client.get_order, "BTCUSDT", origClientOrderId="bc-rest"))["data"]
    assert by_id["orderId"] == by_client_id["orderId"] == resting["orderId"]

    one = await call(client.get_open_orders, "BTCUSDT")
    every = await call(client.get_open_orders)
    assert [o["clientOrderId"] for o in one["data"]] == ["bc-rest"] == [o["clientOrderId"] for o in every["data"]]
    weight_one = int(one["limit_usage"]["x-mbx-used-weight-1m"])
    assert int(every["limit_usage"]["x-mbx-used-weight-1m"]) - weight_one == 80  # without symbol: 80

    cancelled = (await call(client.cancel_order, "BTCUSDT", orderId=resting["orderId"]))["data"]
    assert cancelled["status"] == "CANCELED"
    with pytest.raises(ClientError) as refused:
        await call(client.cancel_order, "BTCUSDT", orderId=resting["orderId"])
    assert refused.value.error_code == -2011

    after = await balances_via_connector(client)
    assert after["BTC"] == (before["BTC"][0] - Decimal("0.02"), Decimal(0))
    assert after["USDT"] == (before["USDT"][0] + Decimal("0.02") * Decimal("64000.00"), Decimal(0))
    ticker = (await call(client.book_ticker, "BTCUSDT"))["data"]
    assert (ticker["bidPrice"], ticker["askPrice"]) == ("64000.00000000", "64001.00000000")


async def balances_via_connector(client: Spot) -> dict[str, tuple[Decimal, Decimal]]:
    account = (await call(client.account))["data"]
    return {b["asset"]: (Decimal(b["free"]), Decimal(b["locked"])) for b in account["balances"]}


@pytest.mark.parametrize(
    ("skew_ms", "recv_window", "code"),
    [(+2_000, None, -1021), (-7_000, None, -1021), (-7_000, 10_000, None), (+500, None, None)],
)
async def test_binance_connector_clock_skew(
    venue: Venue,
    loopback_only: list[tuple[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
    skew_ms: int,
    recv_window: int | None,
    code: int | None,
) -> None:
    """The connector stamps its own clock: 1 s ahead or older than recvWindow is -1021 (Binance's rule)."""
    monkeypatch.setattr(binance.api, "get_timestamp", lambda: time.time_ns() // 1_000_000 + skew_ms)
    client = Spot(api_key=DEFAULT_API_KEY, api_secret=DEFAULT_API_SECRET, base_url=venue.url)
    extra = {"recvWindow": recv_window} if recv_window else {}
    if code is None:
        assert (await call(client.account, **extra))["accountType"] == "SPOT"
    else:
        with pytest.raises(ClientError) as refused:
            await call(client.account, **extra)
        assert refused.value.error_code == code


async def test_binance_connector_with_a_wrong_secret_gets_1022(
    venue: Venue, loopback_only: list[tuple[str, Any]]
) -> None:
    client = Spot(api_key=DEFAULT_API_KEY, api_secret="not-the-secret", base_url=venue.url)
    with pytest.raises(ClientError) as refused:
        await call(client.account)
    assert (refused.value.status_code, refused.value.error_code) == (400, -1022)


# -- ccxt ----------------------------------------------------------------------------------------


def ccxt_binance(url: str, **options: Any) -> ccxt.binance:
    exchange = ccxt.binance(
        {
            "apiKey": DEFAULT_API_KEY,
            "secret": DEFAULT_API_SECRET,
            "enableRateLimit": False,
            "options": {
                "fetchMarkets": {"types": ["spot"]},  # no futures/options hosts
                "fetchCurrencies": False,  # that one is a sapi call on another host
                "fetchMargins": False,
                **options,
            },
        }
    )
    target = urlsplit(url)
    for name, base in list(exchange.urls["api"].items()):  # every API URL, before the first call
        if isinstance(base, str):
            exchange.urls["api"][name] = f"{target.scheme}://{target.netloc}{urlsplit(base).path}"
    assert all(urlsplit(u).netloc == target.netloc for u in exchange.urls["api"].values() if isinstance(u, str))
    return exchange


async def test_ccxt_loads_markets_places_queries_cancels_and_reads_balances(
    venue: Venue, loopback_only: list[tuple[str, Any]]
) -> None:
    exchange = ccxt_binance(venue.url, adjustForTimeDifference=True)
    try:
        markets = await exchange.load_markets()
        assert sorted(markets) == sorted(f"{x.base_asset}/{x.quote_asset}" for x in DEFAULT_LISTINGS)
        btc = markets["BTC/USDT"]
        assert btc["active"] and btc["spot"]
        assert (btc["precision"]["price"], btc["precision"]["amount"]) == (0.01, 0.00001)
        assert (btc["limits"]["cost"]["min"], btc["limits"]["amount"]["min"]) == (5.0, 0.00000001)
        assert exchange.amount_to_precision("BTC/USDT", 0.0123456) == "0.01234"

        before = await exchange.fetch_balance()
        resting = await exchange.create_order("BTC/USDT", "limit", "buy", 0.01, 63000)
        assert resting["status"] == "open"
        post = next(s for s in venue.seen if s.method == "POST")
        assert post.query == "" and "signature=" in post.body  # ccxt signs the form body

        fetched = await exchange.fetch_order(resting["id"], "BTC/USDT")  # by orderId
        assert (fetched["clientOrderId"], fetched["status"]) == (resting["clientOrderId"], "open")
        assert [o["id"] for o in await exchange.fetch_open_orders("BTC/USDT")] == [resting["id"]]

        filled = await exchange.create_order("BTC/USDT", "limit", "buy", 0.02, 64100)
        assert (filled["status"], filled["filled"], filled["average"]) == ("closed", 0.02, 64001.0)
        locked = await exchange.fetch_balance()
        assert locked["USDT"]["used"] == pytest.approx(630.0)
        assert locked["BTC"]["total"] == pytest.approx(before["BTC"]["total"] + 0.02)

        cancelled = await exchange.cancel_order(resting["id"], "BTC/USDT")
        assert cancelled["status"] == "canceled"
        assert await exchange.fetch_open_orders("BTC/USDT") == []
        with pytest.raises(ccxt.OrderNotFound):
            await exchange.cancel_order(resting["id"], "BTC/USDT")
        # The venue's filter (0.63 USDT < 5): -1013. ccxt picks its spot error classes by the
        # api.binance.com URL, so against 127.0.0.1 it reports the generic BadRequest.
        with pytest.raises(ccxt.BadRequest, match="Filter failure: NOTIONAL"):
            await exchange.create_order("BTC/USDT", "limit", "buy", 0.00001, 63000)

        after = await exchange.fetch_balance()
        assert after["USDT"]["used"] == 0
        assert after["USDT"]["total"] == pytest.approx(before["USDT"]["total"] - 0.02 * 64001.0)
        tickers = await exchange.fetch_bids_asks(["BTC/USDT"])
        assert (tickers["BTC/USDT"]["bid"], tickers["BTC/USDT"]["ask"]) == (64000.0, 64001.0)
    finally:
        await exchange.close()
    paths = {(s.method, s.path) for s in venue.seen}
    assert ("GET", "/api/v3/time") in paths  # adjustForTimeDifference measured the venue's clock
    assert all(path.startswith("/api/v3/") for _, path in paths), paths


async def test_ccxt_with_a_fast_clock_is_refused_unless_it_adjusts(
    venue: Venue, loopback_only: list[tuple[str, Any]]
) -> None:
    """A client clock 3 s fast: -1021 (InvalidNonce) as on Binance; adjustForTimeDifference fixes it."""

    def fast() -> int:
        return time.time_ns() // 1_000_000 + 3_000

    naive = ccxt_binance(venue.url)
    naive.milliseconds = fast  # type: ignore[method-assign]
    adjusted = ccxt_binance(venue.url, adjustForTimeDifference=True)
    adjusted.milliseconds = fast  # type: ignore[method-assign]
    try:
        await naive.load_markets()
        with pytest.raises(ccxt.InvalidNonce, match="-1021"):
            await naive.fetch_balance()
        await adjusted.load_markets()
        assert 2_000 < adjusted.options["timeDifference"] < 4_000
        assert (await adjusted.fetch_balance())["info"]["accountType"] == "SPOT"
    finally:
        await naive.close()
        await adjusted.close()
