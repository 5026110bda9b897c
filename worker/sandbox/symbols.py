"""The sandbox's listed symbols: a built-in set, or a file (`sandbox-exchange --symbols FILE`).

A file is JSON in one of two shapes:
* a list of `{"symbol", "baseAsset", "quoteAsset", "tickSize", "stepSize", "minNotional"}` objects
  (optional `minQty`, `maxQty`, `minPrice`, `maxPrice`, `baseAssetPrecision`, `quoteAssetPrecision`);
* a saved Binance `GET /api/v3/exchangeInfo` answer (`{"symbols": [...]}` with `PRICE_FILTER`,
  `LOT_SIZE` and `NOTIONAL` or `MIN_NOTIONAL` filters); symbols not `TRADING` are skipped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from worker.sandbox.matching import DEFAULT_SYMBOLS, SymbolSpec

_KNOWN_QUOTES = ("USDT", "USDC", "FDUSD", "BUSD", "TUSD", "BTC", "ETH", "BNB", "EUR", "TRY", "BRL")


class SymbolFileError(ValueError):
    pass


@dataclass(frozen=True)
class Listing:
    spec: SymbolSpec
    base_asset: str
    quote_asset: str
    base_precision: int = 8
    quote_precision: int = 8

    @property
    def symbol(self) -> str:
        return self.spec.symbol


def split_symbol(symbol: str) -> tuple[str, str]:
    """(base, quote) of a symbol like BTCUSDT, by its known quote-asset suffix."""
    for quote in _KNOWN_QUOTES:
        if symbol.endswith(quote) and len(symbol) > len(quote):
            return symbol[: -len(quote)], quote
    raise SymbolFileError(f"{symbol}: cannot tell base from quote asset; give baseAsset and quoteAsset")


def listing_of(spec: SymbolSpec) -> Listing:
    base, quote = split_symbol(spec.symbol)
    return Listing(spec, base, quote)


DEFAULT_LISTINGS: tuple[Listing, ...] = tuple(listing_of(spec) for spec in DEFAULT_SYMBOLS)


def load_listings(path: Path) -> tuple[Listing, ...]:
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise SymbolFileError(f"{path}: {exc}") from None
    if isinstance(document, dict) and isinstance(document.get("symbols"), list):
        trading = [item for item in document["symbols"] if item.get("status", "TRADING") == "TRADING"]
        entries = [_from_exchange_info(item) for item in trading]
    elif isinstance(document, list):
        entries = [_from_simple(item) for item in document]
    else:
        raise SymbolFileError(f"{path}: expected a list of symbols or an exchangeInfo object with 'symbols'")
    if not entries:
        raise SymbolFileError(f"{path}: no tradable symbols")
    names = [entry.symbol for entry in entries]
    if len(set(names)) != len(names):
        raise SymbolFileError(f"{path}: a symbol is listed twice")
    return tuple(entries)


def _decimal(item: dict[str, Any], key: str, default: Decimal | None = None) -> Decimal:
    raw = item.get(key)
    if raw is None:
        if default is None:
            raise SymbolFileError(f"{item.get('symbol', '?')}: '{key}' is missing")
        return default
    try:
        value = Decimal(str(raw))
    except InvalidOperation:
        raise SymbolFileError(f"{item.get('symbol', '?')}: '{key}' is not a number: {raw!r}") from None
    if not value.is_finite() or value < 0:
        raise SymbolFileError(f"{item.get('symbol', '?')}: '{key}' must be a non-negative number")
    return value


def _spec(item: dict[str, Any], values: dict[str, Any]) -> SymbolSpec:
    defaults = SymbolSpec("X", Decimal(1), Decimal(1), Decimal(0))
    tick, step = _decimal(values, "tickSize"), _decimal(values, "stepSize")
    if tick <= 0 or step <= 0:
        raise SymbolFileError(f"{item.get('symbol', '?')}: tickSize and stepSize must be > 0")
    return SymbolSpec(
        symbol=str(item["symbol"]),
        tick_size=tick,
        step_size=step,
        min_notional=_decimal(values, "minNotional", Decimal(0)),
        min_qty=_decimal(values, "minQty", defaults.min_qty),
        max_qty=_decimal(values, "maxQty", defaults.max_qty),
        min_price=_decimal(values, "minPrice", defaults.min_price),
        max_price=_decimal(values, "maxPrice", defaults.max_price),
    )


def _listing(item: dict[str, Any], spec: SymbolSpec) -> Listing:
    if "baseAsset" in item and "quoteAsset" in item:
        base, quote = str(item["baseAsset"]), str(item["quoteAsset"])
    else:
        base, quote = split_symbol(spec.symbol)
    return Listing(
        spec,
        base,
        quote,
        int(item.get("baseAssetPrecision", 8)),
        int(item.get("quoteAssetPrecision", item.get("quotePrecision", 8))),
    )


def _from_simple(item: Any) -> Listing:
    if not isinstance(item, dict) or "symbol" not in item:
        raise SymbolFileError(f"expected an object with 'symbol', got {item!r}")
    return _listing(item, _spec(item, item))


def _from_exchange_info(item: dict[str, Any]) -> Listing:
    filters = {f.get("filterType"): f for f in item.get("filters", [])}
    price, lot = filters.get("PRICE_FILTER", {}), filters.get("LOT_SIZE", {})
    notional = filters.get("NOTIONAL") or filters.get("MIN_NOTIONAL") or {}
    values = {**price, **lot, "minNotional": notional.get("minNotional", "0")}
    # Binance sends maxPrice "0" / minPrice "0" for "no limit"; keep the sandbox's defaults then.
    values = {k: v for k, v in values.items() if not (k in ("minPrice", "maxPrice") and Decimal(str(v)) == 0)}
    return _listing(item, _spec(item, values))
