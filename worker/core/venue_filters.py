"""The venue's own grid (exchangeInfo filters) against each decision's tick, step and min notional.

Decisions carry the grid Strategy+Risk believed in (`tick_size`, `step_size`, `min_notional`);
the venue has the final word. `parse_exchange_info` reads Binance's filters (PRICE_FILTER,
LOT_SIZE, NOTIONAL or the older MIN_NOTIONAL; the venue client fetches them once at start),
and `check_decision` (pure) compares a decision with them:

* a decision grid is *compatible* when every order it can produce is valid on the venue: its tick
  and step are whole multiples of the venue's and its min notional is at least the venue's. It
  passes unchanged.
* otherwise, by `GridPolicy`: `deny` gives the reason to record with a DENIED event
  (`venue_filter:...`), `venue` gives the decision re-gridded on the venue's tick, step and min
  notional (rounding then happens on the venue's grid).
* a symbol the venue does not list is always denied (`venue_filter:unknown_symbol`).

Replays must see the same filters as the live run: the caller records what it loaded.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any

from worker.contract.messages import Decision

EXCHANGE_INFO_PATH = "/api/v3/exchangeInfo"


class GridPolicy(StrEnum):
    DENY = "deny"  # a mismatching decision is DENIED with the reason
    VENUE = "venue"  # a mismatching decision is re-gridded on the venue's filters


class VenueFiltersError(ValueError):
    pass


class VenueNotReady(VenueFiltersError):
    """The venue did not answer exchangeInfo (yet): worth waiting for, unlike unreadable filters."""


@dataclass(frozen=True)
class VenueFilters:
    tick_size: Decimal
    step_size: Decimal
    min_notional: Decimal
    min_qty: Decimal = Decimal(0)
    max_qty: Decimal = Decimal(0)  # 0 = no limit, as Binance writes it
    min_price: Decimal = Decimal(0)
    max_price: Decimal = Decimal(0)


@dataclass(frozen=True)
class FilterVerdict:
    decision: Decision  # the decision to go on with (re-gridded under GridPolicy.VENUE)
    reason: str | None = None  # set: deny the decision with this reason
    regridded: bool = False


def _number(section: Mapping[str, Any], key: str, symbol: str) -> Decimal:
    try:
        value = Decimal(str(section.get(key, "0")))
    except InvalidOperation:
        raise VenueFiltersError(f"{symbol}: {key}={section.get(key)!r} is not a number") from None
    if not value.is_finite() or value < 0:
        raise VenueFiltersError(f"{symbol}: {key}={value} must be a non-negative number")
    return value


def parse_exchange_info(info: Mapping[str, Any]) -> dict[str, VenueFilters]:
    """Filters per TRADING symbol of a `GET /api/v3/exchangeInfo` answer."""
    symbols = info.get("symbols")
    if not isinstance(symbols, list):
        raise VenueFiltersError("exchangeInfo has no 'symbols' list")
    parsed: dict[str, VenueFilters] = {}
    for entry in symbols:
        name = str(entry.get("symbol", ""))
        if entry.get("status", "TRADING") != "TRADING":
            continue
        by_type = {f.get("filterType"): f for f in entry.get("filters", [])}
        price, lot = by_type.get("PRICE_FILTER"), by_type.get("LOT_SIZE")
        if price is None or lot is None:
            raise VenueFiltersError(f"{name}: PRICE_FILTER or LOT_SIZE missing")
        notional = by_type.get("NOTIONAL") or by_type.get("MIN_NOTIONAL") or {}
        tick, step = _number(price, "tickSize", name), _number(lot, "stepSize", name)
        if tick == 0 or step == 0:
            raise VenueFiltersError(f"{name}: tickSize and stepSize must be > 0")
        parsed[name] = VenueFilters(
            tick_size=tick,
            step_size=step,
            min_notional=_number(notional, "minNotional", name),
            min_qty=_number(lot, "minQty", name),
            max_qty=_number(lot, "maxQty", name),
            min_price=_number(price, "minPrice", name),
            max_price=_number(price, "maxPrice", name),
        )
    return parsed


def _multiple(value: Decimal, unit: Decimal) -> bool:
    return value >= unit and value % unit == 0


def mismatch(decision: Decision, venue: VenueFilters) -> str | None:
    """Why the decision's grid can produce orders the venue refuses (None = compatible)."""
    if not _multiple(decision.tick_size, venue.tick_size):
        return f"venue_filter:tick_size {decision.tick_size} vs {venue.tick_size}"
    if not _multiple(decision.step_size, venue.step_size):
        return f"venue_filter:step_size {decision.step_size} vs {venue.step_size}"
    if decision.min_notional < venue.min_notional:
        return f"venue_filter:min_notional {decision.min_notional} vs {venue.min_notional}"
    return None


def check_decision(decision: Decision, filters: Mapping[str, VenueFilters], policy: GridPolicy) -> FilterVerdict:
    venue = filters.get(decision.symbol)
    if venue is None:
        return FilterVerdict(decision, "venue_filter:unknown_symbol")
    reason = mismatch(decision, venue)
    if reason is None:
        return FilterVerdict(decision)
    if policy is GridPolicy.DENY:
        return FilterVerdict(decision, reason)
    # model_copy skips validation: the venue's values are positive Decimals, parsed above.
    regridded = decision.model_copy(
        update={"tick_size": venue.tick_size, "step_size": venue.step_size, "min_notional": venue.min_notional}
    )
    return FilterVerdict(regridded, regridded=True)
