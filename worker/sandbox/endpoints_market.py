"""Public market endpoints: `GET /api/v3/exchangeInfo` and `GET /api/v3/ticker/bookTicker`.

`exchangeInfo` carries what a Binance client reads to load markets (ccxt: `status`, `baseAsset`,
`quoteAsset`, precisions, `orderTypes`, `permissionSets`, filters PRICE_FILTER / LOT_SIZE /
NOTIONAL / MIN_NOTIONAL) and the sandbox's `rateLimits`.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from aiohttp import web

from worker.io.binance.protocol import ErrorCode
from worker.sandbox.errors import ApiError
from worker.sandbox.limits import WEIGHTS
from worker.sandbox.symbols import Listing

if TYPE_CHECKING:
    from worker.sandbox.server import SandboxExchange

ORDER_TYPES = ["LIMIT", "MARKET"]
BOOK_QTY = "1000.00000000"  # the sandbox has no depth: every quote shows this size


def _f(value: Decimal) -> str:
    return format(value, "f")


def symbol_json(listing: Listing) -> dict[str, Any]:
    spec = listing.spec
    return {
        "symbol": spec.symbol,
        "status": "TRADING",
        "baseAsset": listing.base_asset,
        "baseAssetPrecision": listing.base_precision,
        "quoteAsset": listing.quote_asset,
        "quotePrecision": listing.quote_precision,
        "quoteAssetPrecision": listing.quote_precision,
        "baseCommissionPrecision": listing.base_precision,
        "quoteCommissionPrecision": listing.quote_precision,
        "orderTypes": ORDER_TYPES,
        "icebergAllowed": False,
        "ocoAllowed": False,
        "otoAllowed": False,
        "opoAllowed": False,
        "quoteOrderQtyMarketAllowed": False,
        "allowTrailingStop": False,
        "cancelReplaceAllowed": True,
        "amendAllowed": False,
        "pegInstructionsAllowed": False,
        "isSpotTradingAllowed": True,
        "isMarginTradingAllowed": False,
        "filters": [
            {
                "filterType": "PRICE_FILTER",
                "minPrice": _f(spec.min_price),
                "maxPrice": _f(spec.max_price),
                "tickSize": _f(spec.tick_size),
            },
            {
                "filterType": "LOT_SIZE",
                "minQty": _f(spec.min_qty),
                "maxQty": _f(spec.max_qty),
                "stepSize": _f(spec.step_size),
            },
            {
                "filterType": "NOTIONAL",
                "minNotional": _f(spec.min_notional),
                "applyMinToMarket": True,
                "maxNotional": "9000000.00000000",
                "applyMaxToMarket": False,
                "avgPriceMins": 5,
            },
        ],
        "permissions": [],
        "permissionSets": [["SPOT"]],
        "defaultSelfTradePreventionMode": "NONE",
        "allowedSelfTradePreventionModes": ["NONE"],
    }


def requested_symbols(exchange: SandboxExchange, query: dict[str, str]) -> list[str] | None:
    """`symbol=X` or `symbols=["X","Y"]` (None = all); unknown symbols are -1121 as on Binance."""
    if "symbol" in query and "symbols" in query:
        raise ApiError(400, -1128, "Combination of optional parameters invalid.")
    if "symbol" in query:
        names = [query["symbol"]]
    elif "symbols" in query:
        try:
            names = [str(name) for name in json.loads(query["symbols"])]
        except (ValueError, TypeError):
            raise ApiError(400, -1100, "Illegal characters found in parameter 'symbols'.") from None
    else:
        return None
    for name in names:
        if name not in exchange.listings:
            raise ApiError(400, ErrorCode.BAD_SYMBOL, "Invalid symbol.")
    return names


async def exchange_info(exchange: SandboxExchange, request: web.Request) -> web.Response:
    async def body(query: dict[str, str]) -> dict[str, Any]:
        names = requested_symbols(exchange, query) or list(exchange.listings)
        return {
            "timezone": "UTC",
            "serverTime": exchange.now_ms(),
            "rateLimits": exchange.rates.published(),
            "exchangeFilters": [],
            "symbols": [symbol_json(exchange.listings[name]) for name in names],
        }

    return await exchange.public(request, WEIGHTS["exchangeInfo"], body)


async def book_ticker(exchange: SandboxExchange, request: web.Request) -> web.Response:
    def one(symbol: str) -> dict[str, str]:
        bid, ask = exchange.market.quote(symbol) or (Decimal(0), Decimal(0))
        return {
            "symbol": symbol,
            "bidPrice": format(bid.quantize(Decimal("0.00000001")), "f"),
            "bidQty": BOOK_QTY,
            "askPrice": format(ask.quantize(Decimal("0.00000001")), "f"),
            "askQty": BOOK_QTY,
        }

    async def body(query: dict[str, str]) -> Any:
        names = requested_symbols(exchange, query)
        if "symbol" in query:
            return one(query["symbol"])
        return [one(name) for name in (names if names is not None else list(exchange.listings))]

    weight = WEIGHTS["bookTicker"] if request.query.get("symbol") else WEIGHTS["bookTicker:all"]
    return await exchange.public(request, weight, body)
