"""The sandbox account: every accepted order, looked up by id, and balances that move with fills.

Balances are derived, never stored twice: starting balances plus, for every order, its executed
quantity (base) against its cumulative quote; an open order locks what it could still spend
(a BUY limit: price x remaining quote; a SELL: remaining base). Commission is 0 (the fills say
so). Balances are not enforced: an order is accepted even when it would overdraw (documented).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

from worker.sandbox.matching import VenueOrder
from worker.sandbox.symbols import Listing

DEFAULT_QUOTE_BALANCE = Decimal(1_000_000)
DEFAULT_BASE_BALANCE = Decimal(1_000)
_Q = Decimal("0.00000001")


def default_balances(listings: Iterable[Listing]) -> dict[str, Decimal]:
    balances: dict[str, Decimal] = {}
    for listing in listings:
        balances.setdefault(listing.base_asset, DEFAULT_BASE_BALANCE)
        balances[listing.quote_asset] = DEFAULT_QUOTE_BALANCE
    return balances


class Account:
    def __init__(self, listings: Iterable[Listing], starting: Mapping[str, Decimal] | None = None) -> None:
        self.listings = {listing.symbol: listing for listing in listings}
        self.starting = dict(starting) if starting is not None else default_balances(self.listings.values())
        self._by_id: dict[int, VenueOrder] = {}
        self._unfilled: dict[int, VenueOrder] = {}  # accepted, not filled at all yet

    def track(self, order: VenueOrder) -> None:
        """Called once per accepted order (orders keep changing in place as they fill)."""
        self._by_id[order.order_id] = order
        self._unfilled[order.order_id] = order

    def first_fills(self) -> int:
        """How many orders have filled for the first time since the last call (the unfilled
        order count gives one order back for each, as Binance's does)."""
        filled = [oid for oid, order in self._unfilled.items() if order.executed_qty > 0 or not order.is_open]
        count = sum(1 for oid in filled if self._unfilled[oid].executed_qty > 0)
        for oid in filled:
            del self._unfilled[oid]
        return count

    def by_id(self, order_id: int) -> VenueOrder | None:
        return self._by_id.get(order_id)

    def open_orders(self, symbol: str | None = None) -> list[VenueOrder]:
        return [o for o in self._by_id.values() if o.is_open and (symbol is None or o.symbol == symbol)]

    def balances(self) -> dict[str, tuple[Decimal, Decimal]]:
        """Asset -> (free, locked)."""
        total = dict(self.starting)
        locked: dict[str, Decimal] = {}
        for order in self._by_id.values():
            listing = self.listings.get(order.symbol)
            if listing is None:
                continue
            base, quote = listing.base_asset, listing.quote_asset
            sign = 1 if order.side == "BUY" else -1
            total[base] = total.get(base, Decimal(0)) + sign * order.executed_qty
            total[quote] = total.get(quote, Decimal(0)) - sign * order.cum_quote
            if order.is_open:
                remaining = order.orig_qty - order.executed_qty
                if order.side == "BUY" and order.price is not None:
                    locked[quote] = locked.get(quote, Decimal(0)) + order.price * remaining
                elif order.side == "SELL":
                    locked[base] = locked.get(base, Decimal(0)) + remaining
        assets = sorted(set(total) | set(locked))
        return {a: (total.get(a, Decimal(0)) - locked.get(a, Decimal(0)), locked.get(a, Decimal(0))) for a in assets}

    def account_json(self, update_time_ms: int, omit_zero: bool = False) -> dict[str, Any]:
        balances = [
            {"asset": asset, "free": _fmt(free), "locked": _fmt(held)}
            for asset, (free, held) in self.balances().items()
            if not (omit_zero and free == 0 and held == 0)
        ]
        zero = "0.00000000"
        return {
            "makerCommission": 0,
            "takerCommission": 0,
            "buyerCommission": 0,
            "sellerCommission": 0,
            "commissionRates": {"maker": zero, "taker": zero, "buyer": zero, "seller": zero},
            "canTrade": True,
            "canWithdraw": False,
            "canDeposit": False,
            "brokered": False,
            "requireSelfTradePrevention": False,
            "preventSor": False,
            "updateTime": update_time_ms,
            "accountType": "SPOT",
            "balances": balances,
            "permissions": ["SPOT"],
            "uid": 1,
        }


def order_view(order: VenueOrder) -> dict[str, Any]:
    """An order as `GET /api/v3/openOrders` shows it (the query shape: no fills, `time`)."""
    view = {k: v for k, v in order.to_json().items() if k not in ("fills", "transactTime")}
    view.update(
        {
            "stopPrice": "0.00000000",
            "icebergQty": "0.00000000",
            "time": order.transact_time,
            "updateTime": order.transact_time,
            "isWorking": True,
            "workingTime": order.transact_time,
            "origQuoteOrderQty": "0.00000000",
            "selfTradePreventionMode": "NONE",
        }
    )
    return view


def _fmt(value: Decimal) -> str:
    return format(value.quantize(_Q), "f")
