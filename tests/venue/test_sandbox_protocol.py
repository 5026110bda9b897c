"""The sandbox speaks Binance's REST rules, checked over real HTTP with hand-made requests.

Every signing form Binance documents (query string, form body, both concatenated), its timing
rules (1000 ms ahead, recvWindow, at most 60000), the endpoints a client needs, weights and
limits. The third-party clients (ccxt, binance-connector) are in test_clients.py.
"""

from __future__ import annotations

import json
import time
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from aiohttp import ClientSession

from tests.venue.conftest import RunningSandbox, SandboxFactory
from worker.sandbox.limits import Limits
from worker.sandbox.server import DEFAULT_API_KEY, DEFAULT_API_SECRET
from worker.sandbox.signing import hmac_hex
from worker.sandbox.symbols import DEFAULT_LISTINGS, SymbolFileError, load_listings

FORM = {"Content-Type": "application/x-www-form-urlencoded", "X-MBX-APIKEY": DEFAULT_API_KEY}


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def order_params(coid: str, **extra: str) -> dict[str, str]:
    return {
        "symbol": "BTCUSDT",
        "side": "BUY",
        "type": "LIMIT",
        "timeInForce": "GTC",
        "quantity": "0.01",
        "price": "64250.00",
        "newClientOrderId": coid,
        "timestamp": str(now_ms()),
        **extra,
    }


async def send(
    sandbox: RunningSandbox, method: str, path: str, query: str = "", body: str = ""
) -> tuple[int, Any, dict[str, str]]:
    url = f"{sandbox.url}{path}" + (f"?{query}" if query else "")
    async with (
        ClientSession() as session,
        session.request(method, url, data=body.encode() if body else None, headers=FORM) as response,
    ):
        return response.status, await response.json(), dict(response.headers)


def signed(payload: str, secret: str = DEFAULT_API_SECRET) -> str:
    return f"signature={hmac_hex(payload, secret)}"


def test_the_documented_hmac_example() -> None:
    """rest-api.md "SIGNED Endpoint Examples for POST /api/v3/order", HMAC, ASCII example."""
    payload = (
        "symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=0.1&recvWindow=5000&timestamp=1499827319559"
    )
    secret = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j"
    assert hmac_hex(payload, secret) == "c8db56825ae71d6d79447849e617115f4a920fa2acdcab2b053c4b2838bd6b71"


async def test_query_signed_order_is_accepted(sandbox_factory: SandboxFactory) -> None:
    sandbox = await sandbox_factory()
    query = urlencode(order_params("q-1"))
    status, body, _ = await send(sandbox, "POST", "/api/v3/order", f"{query}&{signed(query)}")
    assert status == 200, body
    assert body["clientOrderId"] == "q-1"


async def test_body_signed_order_is_accepted(sandbox_factory: SandboxFactory) -> None:
    """The issue's bug: a correctly body-signed order was refused with -1022."""
    sandbox = await sandbox_factory()
    body = urlencode(order_params("b-1"))
    status, answer, _ = await send(sandbox, "POST", "/api/v3/order", body=f"{body}&{signed(body)}")
    assert status == 200, answer
    assert answer["clientOrderId"] == "b-1"


@pytest.mark.parametrize("signature_in", ["query", "body"])
async def test_mixed_query_and_body_signed_as_concatenation(sandbox_factory: SandboxFactory, signature_in: str) -> None:
    sandbox = await sandbox_factory()
    params = order_params(f"m-{signature_in}")
    query = urlencode({k: params[k] for k in ("symbol", "side", "type", "timeInForce")})
    body = urlencode({k: v for k, v in params.items() if k not in ("symbol", "side", "type", "timeInForce")})
    signature = signed(query + body)  # no separator between query and body
    if signature_in == "query":
        status, answer, _ = await send(sandbox, "POST", "/api/v3/order", f"{query}&{signature}", body)
    else:
        status, answer, _ = await send(sandbox, "POST", "/api/v3/order", query, f"{body}&{signature}")
    assert status == 200, answer
    assert answer["clientOrderId"] == f"m-{signature_in}"


async def test_mixed_request_signed_with_a_separator_is_refused(sandbox_factory: SandboxFactory) -> None:
    sandbox = await sandbox_factory()
    params = order_params("m-sep")
    query = urlencode({"symbol": params.pop("symbol")})
    body = urlencode(params)
    status, answer, _ = await send(sandbox, "POST", "/api/v3/order", query, f"{body}&{signed(query + '&' + body)}")
    assert (status, answer["code"]) == (400, -1022)


async def test_a_parameter_in_both_parts_is_taken_from_the_query(sandbox_factory: SandboxFactory) -> None:
    sandbox = await sandbox_factory()
    query = "quantity=0.02"
    body = urlencode(order_params("both-1", quantity="0.03"))
    status, answer, _ = await send(sandbox, "POST", "/api/v3/order", query, f"{body}&{signed(query + body)}")
    assert status == 200, answer
    assert Decimal(answer["origQty"]) == Decimal("0.02")


async def test_wrong_signature_is_1022_and_case_does_not_matter(sandbox_factory: SandboxFactory) -> None:
    sandbox = await sandbox_factory()
    query = urlencode(order_params("sig-1"))
    status, answer, _ = await send(sandbox, "POST", "/api/v3/order", f"{query}&{signed(query, 'other-secret')}")
    assert (status, answer["code"]) == (400, -1022)
    tampered = query.replace("quantity=0.01", "quantity=0.02")
    status, answer, _ = await send(sandbox, "POST", "/api/v3/order", f"{tampered}&{signed(query)}")
    assert (status, answer["code"]) == (400, -1022)
    truncated = f"signature={hmac_hex(query, DEFAULT_API_SECRET)[:10]}"
    status, answer, _ = await send(sandbox, "POST", "/api/v3/order", f"{query}&{truncated}")
    assert (status, answer["code"]) == (400, -1022)
    upper = f"signature={hmac_hex(query, DEFAULT_API_SECRET).upper()}"
    status, answer, _ = await send(sandbox, "POST", "/api/v3/order", f"{query}&{upper}")
    assert status == 200, answer


@pytest.mark.parametrize(
    ("offset_ms", "recv_window", "accepted"),
    [
        (+500, None, True),  # less than 1000 ms ahead
        (+1500, None, False),  # Binance rejects 1 s ahead (the old sandbox took 5 s)
        (+1500, "60000", False),  # ... whatever the recvWindow
        (-4000, None, True),  # within the default 5000 ms window
        (-6000, None, False),
        (-6000, "10000", True),
        (-6000, "5999.5", False),
        (-59000, "60000", True),
    ],
)
async def test_timestamp_rules(
    sandbox_factory: SandboxFactory, offset_ms: int, recv_window: str | None, accepted: bool
) -> None:
    sandbox = await sandbox_factory()
    extra = {"recvWindow": recv_window} if recv_window else {}
    params = {"timestamp": str(now_ms() + offset_ms), **extra}
    query = urlencode(params)
    status, answer, _ = await send(sandbox, "GET", "/api/v3/account", f"{query}&{signed(query)}")
    if accepted:
        assert status == 200, answer
    else:
        assert (status, answer["code"]) == (400, -1021), answer


async def test_recv_window_above_60000_is_refused(sandbox_factory: SandboxFactory) -> None:
    sandbox = await sandbox_factory()
    query = urlencode({"timestamp": str(now_ms()), "recvWindow": "60001"})
    status, answer, _ = await send(sandbox, "GET", "/api/v3/account", f"{query}&{signed(query)}")
    assert (status, answer["code"]) == (400, -1131)


async def test_exchange_info_is_complete_and_publishes_binance_limits(sandbox_factory: SandboxFactory) -> None:
    frozen = time.time()  # the venue's clock stands still: no minute window ends mid-test
    sandbox = await sandbox_factory(limits=Limits(), clock=lambda: frozen)
    status, info, headers = await send(sandbox, "GET", "/api/v3/exchangeInfo")
    assert status == 200
    assert headers["X-MBX-USED-WEIGHT-1M"] == "20"
    limits = {(r["rateLimitType"], r["interval"], r["intervalNum"]): r["limit"] for r in info["rateLimits"]}
    assert limits == {
        ("REQUEST_WEIGHT", "MINUTE", 1): 6000,
        ("ORDERS", "SECOND", 10): 50,
        ("ORDERS", "DAY", 1): 160000,
    }
    btc = next(s for s in info["symbols"] if s["symbol"] == "BTCUSDT")
    assert (btc["baseAsset"], btc["quoteAsset"], btc["status"]) == ("BTC", "USDT", "TRADING")
    filters = {f["filterType"]: f for f in btc["filters"]}
    assert (filters["PRICE_FILTER"]["tickSize"], filters["LOT_SIZE"]["stepSize"]) == ("0.01", "0.00001")
    assert filters["NOTIONAL"]["minNotional"] == "5"
    status, one, _ = await send(sandbox, "GET", "/api/v3/exchangeInfo", "symbol=ETHUSDT")
    assert [s["symbol"] for s in one["symbols"]] == ["ETHUSDT"]
    status, answer, _ = await send(sandbox, "GET", "/api/v3/exchangeInfo", "symbol=NOPEUSDT")
    assert (status, answer["code"]) == (400, -1121)


async def test_weights_and_the_weight_limit(sandbox_factory: SandboxFactory) -> None:
    frozen = time.time()  # the venue's clock stands still: no minute window ends mid-test
    sandbox = await sandbox_factory(limits=Limits(100, 50), clock=lambda: frozen)
    used = []
    for path, query in [
        ("/api/v3/ticker/bookTicker", "symbol=BTCUSDT"),  # 2
        ("/api/v3/ticker/bookTicker", ""),  # 4
        ("/api/v3/openOrders", "symbol=BTCUSDT"),  # 6
        ("/api/v3/openOrders", ""),  # 80
    ]:
        signed_query = query
        if "openOrders" in path:
            payload = "&".join(p for p in (query, f"timestamp={now_ms()}") if p)
            signed_query = f"{payload}&{signed(payload)}"
        status, _, headers = await send(sandbox, "GET", path, signed_query)
        assert status == 200
        used.append(int(headers["X-MBX-USED-WEIGHT-1M"]))
    assert used == [2, 6, 12, 92]
    status, answer, headers = await send(sandbox, "GET", "/api/v3/exchangeInfo")  # +20 > 100
    assert (status, answer["code"]) == (429, -1003)
    assert int(headers["Retry-After"]) >= 1


async def query_signed(sandbox: RunningSandbox, method: str, path: str, **params: str) -> tuple[int, Any]:
    query = urlencode({**params, "timestamp": str(now_ms())})
    status, answer, _ = await send(sandbox, method, path, f"{query}&{signed(query)}")
    return status, answer


async def test_order_lookup_open_orders_cancel_and_balances(sandbox_factory: SandboxFactory) -> None:
    sandbox = await sandbox_factory()
    sandbox.exchange.market.set_quote("BTCUSDT", Decimal("64000.00"), Decimal("64001.00"))
    _, before = await query_signed(sandbox, "GET", "/api/v3/account")
    start = {b["asset"]: (Decimal(b["free"]), Decimal(b["locked"])) for b in before["balances"]}

    status, resting = await query_signed(sandbox, "POST", "/api/v3/order", **order_params("rest-1", price="63000.00"))
    assert (status, resting["status"]) == (200, "NEW")
    status, filled = await query_signed(sandbox, "POST", "/api/v3/order", **order_params("fill-1", price="64100.00"))
    assert (status, filled["status"]) == (200, "FILLED")

    status, found = await query_signed(
        sandbox, "GET", "/api/v3/order", symbol="BTCUSDT", orderId=str(resting["orderId"])
    )
    assert (status, found["clientOrderId"]) == (200, "rest-1")
    status, answer = await query_signed(
        sandbox, "GET", "/api/v3/order", symbol="BTCUSDT", orderId=str(resting["orderId"]), origClientOrderId="fill-1"
    )
    assert (status, answer["code"]) == (400, -2013)  # orderId found, but its client id differs

    status, open_btc = await query_signed(sandbox, "GET", "/api/v3/openOrders", symbol="BTCUSDT")
    assert [o["clientOrderId"] for o in open_btc] == ["rest-1"]
    status, open_eth = await query_signed(sandbox, "GET", "/api/v3/openOrders", symbol="ETHUSDT")
    assert open_eth == []

    _, after = await query_signed(sandbox, "GET", "/api/v3/account")
    now = {b["asset"]: (Decimal(b["free"]), Decimal(b["locked"])) for b in after["balances"]}
    assert now["BTC"][0] == start["BTC"][0] + Decimal("0.01")  # the fill, at the ask
    assert now["USDT"][1] == Decimal("630.00")  # 0.01 x 63000 locked by the resting buy
    assert now["USDT"][0] == start["USDT"][0] - Decimal("640.01") - Decimal("630.00")

    status, cancelled = await query_signed(
        sandbox, "DELETE", "/api/v3/order", symbol="BTCUSDT", orderId=str(resting["orderId"])
    )
    assert (status, cancelled["status"]) == (200, "CANCELED")
    _, final = await query_signed(sandbox, "GET", "/api/v3/account", omitZeroBalances="true")
    balances = {b["asset"]: (Decimal(b["free"]), Decimal(b["locked"])) for b in final["balances"]}
    assert balances["USDT"] == (start["USDT"][0] - Decimal("640.01"), Decimal(0))
    status, answer = await query_signed(sandbox, "GET", "/api/v3/openOrders")
    assert (status, answer) == (200, [])


async def test_book_ticker(sandbox_factory: SandboxFactory) -> None:
    sandbox = await sandbox_factory()
    sandbox.exchange.market.set_quote("ETHUSDT", Decimal("3000.10"), Decimal("3000.20"))
    status, one, _ = await send(sandbox, "GET", "/api/v3/ticker/bookTicker", "symbol=ETHUSDT")
    assert status == 200
    assert (Decimal(one["bidPrice"]), Decimal(one["askPrice"])) == (Decimal("3000.10"), Decimal("3000.20"))
    status, some, _ = await send(sandbox, "GET", "/api/v3/ticker/bookTicker", 'symbols=["ETHUSDT","BTCUSDT"]')
    assert [t["symbol"] for t in some] == ["ETHUSDT", "BTCUSDT"]
    status, every, _ = await send(sandbox, "GET", "/api/v3/ticker/bookTicker")
    assert len(every) == len(DEFAULT_LISTINGS)


def test_symbols_from_a_simple_file_and_from_a_saved_exchange_info(tmp_path: Path) -> None:
    simple = tmp_path / "symbols.json"
    simple.write_text(
        json.dumps(
            [
                {"symbol": "ADAEUR", "tickSize": "0.001", "stepSize": "0.1", "minNotional": "5"},
                {"symbol": "WEIRD", "baseAsset": "WE", "quoteAsset": "IRD", "tickSize": "1", "stepSize": "1"},
            ]
        )
    )
    listings = load_listings(simple)
    assert [(x.symbol, x.base_asset, x.quote_asset) for x in listings] == [
        ("ADAEUR", "ADA", "EUR"),
        ("WEIRD", "WE", "IRD"),
    ]
    assert listings[0].spec.tick_size == Decimal("0.001")

    saved = tmp_path / "exchangeInfo.json"
    from worker.sandbox.endpoints_market import symbol_json

    symbols = [symbol_json(x) for x in DEFAULT_LISTINGS]
    symbols[0] = {**symbols[0], "status": "BREAK"}
    saved.write_text(json.dumps({"symbols": symbols}))
    loaded = load_listings(saved)
    assert [x.spec for x in loaded] == [x.spec for x in DEFAULT_LISTINGS[1:]]

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"symbol": "XYZ", "tickSize": "0.1", "stepSize": "1"}]))
    with pytest.raises(SymbolFileError, match="base from quote"):
        load_listings(bad)


async def test_the_worker_loads_the_venues_filters_from_the_sandbox(sandbox_factory: SandboxFactory) -> None:
    from worker.core.venue_filters import VenueFilters, VenueFiltersError
    from worker.io.binance.filters import load_venue_filters

    sandbox = await sandbox_factory()
    filters = await load_venue_filters(sandbox.url)
    assert set(filters) == {x.symbol for x in DEFAULT_LISTINGS}
    btc = DEFAULT_LISTINGS[0].spec
    assert filters["BTCUSDT"] == VenueFilters(
        btc.tick_size, btc.step_size, btc.min_notional, btc.min_qty, btc.max_qty, btc.min_price, btc.max_price
    )
    with pytest.raises(VenueFiltersError, match="HTTP 404"):
        await load_venue_filters(sandbox.url + "/nowhere")


def test_the_cli_lists_symbols_from_a_file_with_binances_limits(tmp_path: Path) -> None:
    import subprocess
    import sys
    import urllib.request

    symbols = tmp_path / "symbols.json"
    symbols.write_text(json.dumps([{"symbol": "ADAEUR", "tickSize": "0.001", "stepSize": "0.1", "minNotional": "5"}]))
    balances = tmp_path / "balances.json"
    balances.write_text(json.dumps({"EUR": "500"}))
    command = [sys.executable, "-m", "worker", "sandbox-exchange", "--port", "0", "--symbols", str(symbols)]
    process = subprocess.Popen([*command, "--balances", str(balances)], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip().rsplit(" ", 1)[-1]
        with urllib.request.urlopen(f"{url}/api/v3/exchangeInfo", timeout=10) as response:
            info = json.load(response)
        query = f"timestamp={now_ms()}"
        request = urllib.request.Request(
            f"{url}/api/v3/account?{query}&{signed(query)}", headers={"X-MBX-APIKEY": DEFAULT_API_KEY}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            account = json.load(response)
    finally:
        process.terminate()
        process.wait(timeout=10)
    assert [(s["symbol"], s["baseAsset"], s["quoteAsset"]) for s in info["symbols"]] == [("ADAEUR", "ADA", "EUR")]
    assert {r["rateLimitType"]: r["limit"] for r in info["rateLimits"] if r["interval"] != "DAY"} == {
        "REQUEST_WEIGHT": 6000,
        "ORDERS": 50,
    }
    assert [(b["asset"], b["free"]) for b in account["balances"]] == [("EUR", "500.00000000")]
