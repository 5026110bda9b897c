"""Fill and slippage models for the backtest executor, chosen by configuration.

Every model is a pure function of the order, the market view at the order's event time, and the
order's own seeded generator: the same order always fills the same way. Prices stay Decimal;
a model's fill price is the all-in effective price (fees folded in), so `slippage_bps` against
the intent is the whole cost of execution.

| model | fills at | needs market data |
|---|---|---|
| `immediate` | a LIMIT at its price, a MARKET at its reference (the intent) | no |
| `fixed_bps` | the reference moved `bps` against us (never through a LIMIT) | no |
| `spread_fees` | the reference plus half the spread plus the taker fee (default: costs_bps / 2) | no |
| `sqrt_impact` | the reference plus `k * sqrt(qty / adv)` (square-root market impact) | no |

For the three cost models the reference is the touch when there is market data, else the order's
price; a LIMIT with no market data to cross is assumed to rest and fill at its price (maker).
| `quote` | the touch (ask for BUY, bid for SELL), only if a LIMIT reaches it | yes: bid/ask |
| `depth` | walking the book's levels; what the book cannot fill is partial | yes: levels |
| `depth:K:ADV` | as `depth`; where a snapshot has no levels, square-root impact instead | yes: bid/ask |
| `by_regime:R1=SPEC,...,*=SPEC` | the model of the order's regime (`*`: others, default `immediate`) | as those |

`by_regime` (any model but `depth` per regime) is what `execworker diff --fit` prints: one model
per regime, fitted to live fills.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol

from worker.contract.enums import OrderStatus, OrderType, Side, TimeInForce
from worker.contract.messages import MarketSnapshot
from worker.contract.orders import OrderCtx
from worker.policy.rounding import round_to_step

_BPS = Decimal(10_000)


@dataclass(frozen=True)
class Quote:
    """The market for a symbol at an instant: top of book and, optionally, deeper levels."""

    bid: Decimal
    ask: Decimal
    bids: tuple[tuple[Decimal, Decimal], ...] = ()  # (price, qty), best first
    asks: tuple[tuple[Decimal, Decimal], ...] = ()
    event_time_ms: int = 0
    trade_px: Decimal | None = None  # the last trade, if the snapshot carries one
    trade_direction: int = 0  # its aggressor by the tick rule: +1 buyer, -1 seller, 0 unknown

    @classmethod
    def of(cls, snapshot: MarketSnapshot, trade_direction: int = 0) -> Quote:
        return cls(
            bid=snapshot.bid,
            ask=snapshot.ask,
            bids=tuple((level.px, level.qty) for level in snapshot.bids),
            asks=tuple((level.px, level.qty) for level in snapshot.asks),
            event_time_ms=snapshot.event_time_ms,
            trade_px=snapshot.last_px,
            trade_direction=trade_direction,
        )


@dataclass(frozen=True)
class Fill:
    status: OrderStatus
    px_fill: Decimal | None
    qty_filled: Decimal
    reason: str | None = None


class FillModel(Protocol):
    @property
    def name(self) -> str: ...

    def fill(self, order: OrderCtx, quote: Quote | None) -> Fill: ...


def _reference(order: OrderCtx, quote: Quote | None) -> Decimal | None:
    if quote is not None:
        return quote.ask if order.side is Side.BUY else quote.bid
    return order.px if order.px is not None else order.px_intent


def _adverse(reference: Decimal, bps: Decimal, side: Side, tick: Decimal) -> Decimal:
    """`reference` moved `bps` against us, rounded to the tick against us too."""
    moved = reference * (1 + bps / _BPS) if side is Side.BUY else reference * (1 - bps / _BPS)
    return round_to_step(moved, tick, up=side is Side.BUY)


def _within_limit(order: OrderCtx, price: Decimal) -> bool:
    if order.order_type is OrderType.MARKET or order.px is None:
        return True
    return price <= order.px if order.side is Side.BUY else price >= order.px


def _no_fill(order: OrderCtx, reason: str) -> Fill:
    # An IOC/FOK that cannot fill expires; a resting GTC stays open (ACCEPTED).
    status = OrderStatus.EXPIRED if order.tif is not TimeInForce.GTC else OrderStatus.ACCEPTED
    return Fill(status, None, Decimal(0), reason)


@dataclass(frozen=True)
class ImmediateFill:
    name: str = "immediate"

    def fill(self, order: OrderCtx, quote: Quote | None) -> Fill:
        price = order.px if order.order_type is OrderType.LIMIT else order.px_intent
        if price is None:
            return Fill(OrderStatus.REJECTED, None, Decimal(0), "no_reference_price")
        return Fill(OrderStatus.FILLED, price, order.qty)


@dataclass(frozen=True)
class AdverseBps:
    """Fixed (`fixed_bps`), spread-and-fees (`spread_fees`) and square-root impact (`sqrt_impact`)."""

    name: str
    bps: Decimal | None = None  # fixed: this many bps; None: from the order's costs_bps / 2
    impact_k_bps: Decimal | None = None  # sqrt impact: k in bps
    adv: Decimal | None = None  # sqrt impact: average daily volume, base units

    def cost_bps(self, order: OrderCtx) -> Decimal:
        if self.impact_k_bps is not None and self.adv:
            return self.impact_k_bps * (order.qty / self.adv).sqrt()
        if self.bps is not None:
            return self.bps
        return order.costs_bps / 2

    def fill(self, order: OrderCtx, quote: Quote | None) -> Fill:
        if quote is None and order.order_type is OrderType.LIMIT and order.px is not None:
            # No market to cross: a limit order is assumed to rest and fill at its price (maker).
            return Fill(OrderStatus.FILLED, order.px, order.qty)
        reference = _reference(order, quote)
        if reference is None:
            return Fill(OrderStatus.REJECTED, None, Decimal(0), "no_reference_price")
        price = _adverse(reference, self.cost_bps(order), order.side, order.tick_size)
        if not _within_limit(order, price):
            return _no_fill(order, "limit_not_reached")
        return Fill(OrderStatus.FILLED, price, order.qty)


@dataclass(frozen=True)
class QuoteFill:
    """A LIMIT fills only if the market reaches it; at the touch (taker)."""

    name: str = "quote"

    def fill(self, order: OrderCtx, quote: Quote | None) -> Fill:
        if quote is None:
            return Fill(OrderStatus.REJECTED, None, Decimal(0), "no_market_data")
        touch = quote.ask if order.side is Side.BUY else quote.bid
        if not _within_limit(order, touch):
            return _no_fill(order, "limit_not_reached")
        return Fill(OrderStatus.FILLED, touch, order.qty)


@dataclass(frozen=True)
class DepthFill:
    """Walks the book level by level up to the limit; what it cannot take is left unfilled.

    Where a snapshot has no levels on the side the order takes, `no_book` is the model to use
    instead (`depth:K_BPS:ADV`: square-root impact); without one the order is rejected.
    """

    name: str = "depth"
    no_book: AdverseBps | None = None

    def fill(self, order: OrderCtx, quote: Quote | None) -> Fill:
        levels = (quote.asks if order.side is Side.BUY else quote.bids) if quote else ()
        if not levels:
            if self.no_book is not None:
                return self.no_book.fill(order, quote)
            return Fill(OrderStatus.REJECTED, None, Decimal(0), "no_book")
        remaining, cost = order.qty, Decimal(0)
        for price, size in levels:
            if remaining <= 0 or not _within_limit(order, price):
                break
            take = min(remaining, size)
            cost += take * price
            remaining -= take
        filled = order.qty - remaining
        if filled <= 0:
            return _no_fill(order, "limit_not_reached")
        average = cost / filled
        if remaining > 0:
            # IOC remainder expires; the partial fill stays in qty_filled.
            status = OrderStatus.EXPIRED if order.tif is not TimeInForce.GTC else OrderStatus.PARTIALLY_FILLED
            return Fill(status, average, filled, "book_exhausted")
        return Fill(OrderStatus.FILLED, average, filled)


@dataclass(frozen=True)
class ByRegime:
    """Each order filled by the model of its regime (`execworker diff --fit` prints these)."""

    models: tuple[tuple[str, FillModel], ...]
    default: FillModel = ImmediateFill()
    name: str = "by_regime"

    def fill(self, order: OrderCtx, quote: Quote | None) -> Fill:
        for regime, model in self.models:
            if regime == order.regime:
                return model.fill(order, quote)
        return self.default.fill(order, quote)


def _by_regime(rest: str) -> FillModel:
    models: list[tuple[str, FillModel]] = []
    default: FillModel = ImmediateFill()
    for part in rest.split(","):
        regime, equals, spec = part.partition("=")
        if not equals or not regime or spec.startswith(("by_regime", "depth")):
            raise ValueError(f"fill model by_regime: {part!r}: use REGIME=SPEC (not depth), e.g. trend=fixed_bps:2")
        model = fill_model(spec)
        if regime == "*":
            default = model
        else:
            models.append((regime, model))
    return ByRegime(tuple(models), default)


def fill_model(spec: str) -> FillModel:
    """`immediate`, `quote`, `depth`, `spread_fees`, `fixed_bps:2.5`, `sqrt_impact:K:ADV`,
    `by_regime:trend=fixed_bps:3,*=fixed_bps:1`."""
    name, _, rest = spec.partition(":")
    if name == "by_regime" and rest:
        return _by_regime(rest)
    args = rest.split(":") if rest else []
    try:
        if name == "immediate" and not args:
            return ImmediateFill()
        if name == "quote" and not args:
            return QuoteFill()
        if name == "depth" and not args:
            return DepthFill()
        if name == "depth" and len(args) == 2:
            return DepthFill(no_book=AdverseBps("sqrt_impact", impact_k_bps=Decimal(args[0]), adv=Decimal(args[1])))
        if name == "spread_fees" and not args:
            return AdverseBps("spread_fees")
        if name == "fixed_bps" and len(args) == 1:
            return AdverseBps("fixed_bps", bps=Decimal(args[0]))
        if name == "sqrt_impact" and len(args) == 2:
            return AdverseBps("sqrt_impact", impact_k_bps=Decimal(args[0]), adv=Decimal(args[1]))
    except ArithmeticError:
        pass
    raise ValueError(
        f"fill model {spec!r}: use immediate, quote, depth, depth:K_BPS:ADV, spread_fees, fixed_bps:BPS"
        " or sqrt_impact:K_BPS:ADV (or by_regime:REGIME=SPEC,...,*=SPEC)"
    )
