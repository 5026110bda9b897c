"""The sandbox's market: quotes anchored to the order flow, a resting book, exact Decimal fills.

Price model: each symbol's mid starts from a configured price (or the first order's price) and
moves to the price of every later limit order in that symbol, plus a seeded random walk of up to
`walk_bps`; bid/ask sit `spread_bps / 2` either side. A limit order that crosses the quote fills
at once at the quote (taker); an IOC/FOK that does not is EXPIRED; a GTC one rests and fills at
its limit price once the quote crosses it (maker). Market orders fill at the quote.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

_BPS = Decimal(10_000)


@dataclass(frozen=True, slots=True)
class SymbolSpec:
    symbol: str
    tick_size: Decimal
    step_size: Decimal
    min_notional: Decimal
    min_qty: Decimal = Decimal("0.00000001")
    max_qty: Decimal = Decimal("90000000")
    min_price: Decimal = Decimal("0.00000001")
    max_price: Decimal = Decimal("10000000")


# The sample data's symbols (examples/gen_decisions.py), with Binance's spot filters.
DEFAULT_SYMBOLS = (
    SymbolSpec("BTCUSDT", Decimal("0.01"), Decimal("0.00001"), Decimal("5")),
    SymbolSpec("ETHUSDT", Decimal("0.01"), Decimal("0.0001"), Decimal("5")),
    SymbolSpec("SOLUSDT", Decimal("0.01"), Decimal("0.001"), Decimal("5")),
    SymbolSpec("BNBUSDT", Decimal("0.01"), Decimal("0.001"), Decimal("5")),
    SymbolSpec("XRPUSDT", Decimal("0.0001"), Decimal("0.1"), Decimal("5")),
    SymbolSpec("DOGEUSDT", Decimal("0.00001"), Decimal("1"), Decimal("1")),
)


@dataclass
class VenueOrder:
    order_id: int
    client_order_id: str
    symbol: str
    side: str  # BUY | SELL
    type: str  # LIMIT | MARKET
    time_in_force: str
    price: Decimal | None
    orig_qty: Decimal
    transact_time: int
    executed_qty: Decimal = Decimal(0)
    cum_quote: Decimal = Decimal(0)
    status: str = "NEW"
    fills: list[tuple[Decimal, Decimal]] = field(default_factory=list)

    @property
    def is_open(self) -> bool:
        return self.status in ("NEW", "PARTIALLY_FILLED")

    def fill(self, price: Decimal, qty: Decimal) -> None:
        self.executed_qty += qty
        self.cum_quote += price * qty
        self.fills.append((price, qty))
        self.status = "FILLED" if self.executed_qty >= self.orig_qty else "PARTIALLY_FILLED"

    def to_json(self) -> dict[str, object]:
        return {
            "symbol": self.symbol,
            "orderId": self.order_id,
            "orderListId": -1,
            "clientOrderId": self.client_order_id,
            "transactTime": self.transact_time,
            "price": _fmt(self.price or Decimal(0)),
            "origQty": _fmt(self.orig_qty),
            "executedQty": _fmt(self.executed_qty),
            "cummulativeQuoteQty": _fmt(self.cum_quote),
            "status": self.status,
            "timeInForce": self.time_in_force,
            "type": self.type,
            "side": self.side,
            "fills": [
                {"price": _fmt(p), "qty": _fmt(q), "commission": "0", "commissionAsset": "USDT"} for p, q in self.fills
            ],
        }


def _fmt(value: Decimal) -> str:
    return format(value.quantize(Decimal("0.00000001")), "f")


class Market:
    def __init__(
        self,
        specs: tuple[SymbolSpec, ...],
        rng: random.Random,
        start_prices: dict[str, Decimal] | None = None,
        spread_bps: Decimal = Decimal(2),
        walk_bps: int = 0,
    ) -> None:
        self.specs = {s.symbol: s for s in specs}
        self._rng = rng
        self._mid: dict[str, Decimal] = dict(start_prices or {})
        self._half_spread = spread_bps / 2 / _BPS
        self._walk_bps = walk_bps
        self.resting: dict[str, list[VenueOrder]] = {}
        self._pinned: dict[str, tuple[Decimal, Decimal]] = {}

    def set_quote(self, symbol: str, bid: Decimal, ask: Decimal) -> None:
        """Pins a symbol's quote (the market-data mode: quotes come from outside, not the flow)."""
        self._pinned[symbol] = (bid, ask)
        self._mid[symbol] = (bid + ask) / 2
        self._sweep(symbol)

    def quote(self, symbol: str) -> tuple[Decimal, Decimal] | None:
        if symbol in self._pinned:
            return self._pinned[symbol]
        mid = self._mid.get(symbol)
        if mid is None:
            return None
        tick = self.specs[symbol].tick_size
        bid = (mid * (1 - self._half_spread) / tick).to_integral_value(ROUND_FLOOR) * tick
        ask = (mid * (1 + self._half_spread) / tick).to_integral_value(ROUND_CEILING) * tick
        return bid, ask

    def submit(self, order: VenueOrder) -> None:
        """Matches a new order against the current quote, then moves the quote with the flow."""
        quote = self.quote(order.symbol)
        if quote is None and order.price is not None:
            self._mid[order.symbol] = order.price
            quote = self.quote(order.symbol)
        if quote is None:
            order.status = "EXPIRED"  # a market order with no market
            return
        bid, ask = quote
        if order.type == "MARKET":
            order.fill(ask if order.side == "BUY" else bid, order.orig_qty)
        else:
            assert order.price is not None
            crosses = order.price >= ask if order.side == "BUY" else order.price <= bid
            if crosses:
                order.fill(ask if order.side == "BUY" else bid, order.orig_qty)
            elif order.time_in_force in ("IOC", "FOK"):
                order.status = "EXPIRED"
            else:
                self.resting.setdefault(order.symbol, []).append(order)
            self._move(order.symbol, order.price)

    def cancel(self, order: VenueOrder) -> None:
        order.status = "CANCELED"
        book = self.resting.get(order.symbol, [])
        if order in book:
            book.remove(order)

    def _move(self, symbol: str, anchor: Decimal) -> None:
        if symbol in self._pinned:
            return  # quotes come from market data, not from the order flow
        step = Decimal(self._rng.randint(-self._walk_bps, self._walk_bps)) / _BPS if self._walk_bps else 0
        self._mid[symbol] = anchor * (1 + step)
        self._sweep(symbol)

    def _sweep(self, symbol: str) -> None:
        """Fills resting orders that the current quote now crosses, at their own price."""
        bid, ask = self.quote(symbol) or (Decimal(0), Decimal(0))
        still: list[VenueOrder] = []
        for resting in self.resting.get(symbol, []):
            assert resting.price is not None
            if (resting.side == "BUY" and resting.price >= ask) or (resting.side == "SELL" and resting.price <= bid):
                resting.fill(resting.price, resting.orig_qty - resting.executed_qty)
            if resting.is_open:
                still.append(resting)
        self.resting[symbol] = still
