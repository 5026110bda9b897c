"""The backtest executor: fills in simulated time, with seeded latency; no network.

Orders that do not fill at once rest, as on a venue: a GTC limit order that the market has not
reached (or that the book could fill only in part) waits for later market data. As the replay
advances market time (`fills_until`), every snapshot after the order's acknowledgement that
reaches its limit fills it, at its own limit price (a maker fill: a resting order does not
improve on its price). A snapshot reaches the limit when its touch does (ask <= a BUY's limit,
bid >= a SELL's), or when its last trade was made by the other side (by the tick rule, see
`market.py`) at or through the limit; a trade whose direction the tick rule cannot tell does
not count. With the `depth` model a snapshot fills at most the quantity its book
shows at or better than the limit, so an order may fill in several steps; with every other model
the first snapshot that reaches the limit fills what is left.

Resting fills are maker fills: with `maker_fee_bps` their price is the limit moved by that fee
(against us when positive, in our favour when negative, i.e. a rebate), all-in like the cost
models' taker fees. By default (0) the price is the limit, exactly as sent.

Queue position (optional, `queue_position=True`): an order joins the back of its price level.
The volume ahead of it is the size its own side of the book shows at its price when it is
acknowledged (none when it improves on the best price, or when the snapshot has no levels); each
later snapshot shrinks it to the size then shown at that price (a queue only shrinks ahead of
us: newcomers join behind), and to nothing once the level is gone from a book that shows prices
beyond it. Volume that comes to the price (the other side's levels at or through the limit with
`depth`, else the touch) fills the queue ahead first. A print by the other side exactly at the
limit fills the order only once nothing is ahead; a touch or a print *through* the limit means
the whole level traded and fills it regardless. Off by default: a touch at the limit is taken as
a fill (optimistic for thin books; docs/architecture.md).

A resting order may be cancelled (`cancel`); amends are refused, as on the live venue.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from worker.contract.enums import ExecutorKind, OrderStatus, Side
from worker.contract.orders import AmendResult, CancelResult, ExecResult, OrderCtx
from worker.contract.trusted import trusted, trusted_fields
from worker.core.fills import DepthFill, FillModel, ImmediateFill, Quote
from worker.core.latency import LatencyModel
from worker.core.market import MarketView
from worker.policy.rng import Rng
from worker.policy.rounding import EXACT

_ZERO = Decimal(0)
# Average fill prices carry four more decimals than the tick: 1/10,000 of a tick is below any
# venue's reporting precision, and the exponent stays fixed per symbol.
_AVERAGE_EXTRA_PLACES = 4
_OPEN = (OrderStatus.ACCEPTED, OrderStatus.PARTIALLY_FILLED)
_BPS = Decimal(10_000)
# "No information": larger than any size, so that min(ahead, _UNKNOWN) keeps ahead as it was.
_UNKNOWN = Decimal("Infinity")


@dataclass(slots=True)
class _Resting:
    """An order the simulated venue holds: how much of it has filled, and until when it was matched."""

    order: OrderCtx
    arrival: int  # position among resting orders: ties in a fill step go in arrival order
    matched_until_ms: int  # market snapshots up to this time have been matched against it
    status: OrderStatus
    filled: Decimal
    notional: Decimal  # sum of price x qty of its fills: the average price is notional / filled
    updated_ms: int  # when its last change happened (the acknowledgement or the latest fill)
    ahead: Decimal = _ZERO  # queue position model: volume at its price in front of it

    def average_price(self) -> Decimal | None:
        if not self.filled:
            return None
        px = self.order.px
        if px is not None and self.notional == EXACT.multiply(px, self.filled):
            return px  # every fill at the limit: the price as sent, written the same way
        # Mixed prices (a partial at deeper levels, then at the limit): four decimals finer than
        # the tick, a fixed exponent per symbol so that the serialised value stays canonical.
        exponent = self.order.tick_size.as_tuple().exponent
        places = Decimal(1).scaleb((exponent if isinstance(exponent, int) else 0) - _AVERAGE_EXTRA_PLACES)
        return EXACT.divide(self.notional, self.filled).quantize(places, context=EXACT)

    def result(self) -> ExecResult:
        return trusted(
            ExecResult,
            status=self.status,
            exchange_order_id=f"bt-{self.order.client_order_id}",
            px_sent=self.order.px,
            px_fill=self.average_price(),
            qty_filled=self.filled,
            sent_ts_ms=self.order.event_ts_ms,
            ack_ts_ms=self.updated_ms,
        )


class BacktestExecutor:
    """Fills orders by a pluggable model (`worker.core.fills`; default: a LIMIT at once at its
    price, a MARKET at its reference), against an optional market view in market time.

    Time is simulated: an order is sent at its own `event_ts_ms` and acknowledged after a seeded
    latency draw, so the same order always reports the same timestamps, whatever was processed
    before it and however the input was partitioned.
    """

    name = ExecutorKind.BACKTEST.value
    requires_intent = False  # no effects outside Kafka: one transaction per batch is enough

    def __init__(
        self,
        rng: Rng,
        latency: LatencyModel | None = None,
        fills: FillModel | None = None,
        market: MarketView | None = None,
        maker_fee_bps: Decimal = _ZERO,
        queue_position: bool = False,
    ) -> None:
        self._rng = rng
        self._latency = latency or LatencyModel()
        self._fills = fills or ImmediateFill()
        self._market = market
        self._by_depth = isinstance(self._fills, DepthFill)
        self._maker_fee = maker_fee_bps / _BPS
        self._queue = queue_position
        self._orders: dict[str, _Resting] = {}  # every order that has rested, for `query`
        self._open: dict[str, dict[str, _Resting]] = {}  # those still open, by symbol, in arrival order
        self._now_ms = 0  # simulated time: the latest order or market step seen
        # Market time so far: the next advance looks only at symbols with snapshots after it, so
        # that a replay with many resting orders costs per snapshot, not per order and decision.
        self._advanced_to_ms: int | None = None

    def immediate_profile(self) -> tuple[int, int, list[int]] | None:
        """(seed, latency base, latency table) when this is the plain backtest: the immediate fill
        model, no market data, no maker fee or queue model, nothing submitted yet. That
        configuration has a compiled replay fold (`worker.runtime.replay`); None for any other."""
        if not isinstance(self._fills, ImmediateFill) or self._market is not None or self._orders:
            return None
        if self._maker_fee or self._queue:
            return None
        return self._rng.seed, self._latency.base_ms, self._latency.thresholds()

    async def submit(self, order: OrderCtx) -> ExecResult:
        sent_ts_ms = order.event_ts_ms
        ack_ts_ms = sent_ts_ms + self._latency.sample_ms(self._rng, order.client_order_id)
        self._now_ms = max(self._now_ms, sent_ts_ms)
        # The market as of the acknowledgement: what the order meets after its latency.
        quote = self._market.quote_at(order.symbol, ack_ts_ms) if self._market is not None else None
        fill = self._fills.fill(order, quote)
        if self._market is not None and fill.status in _OPEN:
            resting = _Resting(
                order=order,
                arrival=len(self._orders),
                matched_until_ms=ack_ts_ms,
                status=fill.status,
                filled=fill.qty_filled,
                notional=EXACT.multiply(fill.px_fill, fill.qty_filled) if fill.px_fill is not None else _ZERO,
                updated_ms=ack_ts_ms,
                ahead=_queue_ahead(order, quote) if self._queue and quote is not None else _ZERO,
            )
            self._orders[order.client_order_id] = resting
            self._open.setdefault(order.symbol, {})[order.client_order_id] = resting
        return trusted_fields(
            ExecResult,
            {
                "status": fill.status,
                "reason": fill.reason,
                "exchange_order_id": None if fill.status is OrderStatus.REJECTED else f"bt-{order.client_order_id}",
                "px_sent": order.px,
                "px_fill": fill.px_fill,
                "qty_filled": fill.qty_filled,
                "sent_ts_ms": sent_ts_ms,
                "ack_ts_ms": ack_ts_ms,
                "round_trip_ms": None,
            },
        )

    def fills_until(self, until_ms: int | None) -> list[tuple[str, ExecResult]]:
        """Advances market time to `until_ms` (to the end of the data when None) and returns the
        state of each resting order after each fill, in (time, symbol, arrival) order."""
        market, since_ms = self._market, self._advanced_to_ms
        if until_ms is not None:
            self._now_ms = max(self._now_ms, until_ms)
            self._advanced_to_ms = until_ms if since_ms is None else max(since_ms, until_ms)
        if not self._open or market is None:
            return []
        if until_ms is None or since_ms is None:
            moved = set(self._open)
        else:
            moved = market.symbols_between(since_ms, until_ms) & self._open.keys()
        steps: list[tuple[int, str, int, Decimal, _Resting]] = []
        for symbol in moved:
            for resting in self._open[symbol].values():
                order = resting.order
                remaining = EXACT.subtract(order.qty, resting.filled)
                for quote in market.quotes_between(symbol, resting.matched_until_ms, until_ms):
                    take = (
                        self._take_queued(resting, quote, remaining)
                        if self._queue
                        else self._take(order, quote, remaining)
                    )
                    if take > 0:
                        steps.append((quote.event_time_ms, symbol, resting.arrival, take, resting))
                        remaining = EXACT.subtract(remaining, take)
                        if remaining <= 0:
                            break
                if until_ms is not None:
                    resting.matched_until_ms = max(resting.matched_until_ms, until_ms)
        steps.sort(key=lambda step: step[:3])
        results: list[tuple[str, ExecResult]] = []
        for at_ms, _, _, take, resting in steps:
            resting.filled = EXACT.add(resting.filled, take)
            assert resting.order.px is not None  # only limit orders rest
            resting.notional = EXACT.add(resting.notional, EXACT.multiply(self._maker_price(resting.order), take))
            resting.updated_ms = at_ms
            done = resting.filled >= resting.order.qty
            resting.status = OrderStatus.FILLED if done else OrderStatus.PARTIALLY_FILLED
            if done:
                self._close(resting.order)
            results.append((resting.order.client_order_id, resting.result()))
        return results

    def _close(self, order: OrderCtx) -> _Resting | None:
        """Takes an order off the open book (filled or cancelled)."""
        orders = self._open.get(order.symbol)
        resting = orders.pop(order.client_order_id, None) if orders is not None else None
        if orders is not None and not orders:
            del self._open[order.symbol]
        return resting

    def _take(self, order: OrderCtx, quote: Quote, remaining: Decimal) -> Decimal:
        """How much of a resting order one snapshot fills."""
        assert order.px is not None
        buy = order.side is Side.BUY
        touch = quote.ask if buy else quote.bid
        if (touch > order.px) if buy else (touch < order.px):
            # The touch has not come to the order, but a trade by the other side that prints at
            # or through its limit means that the level traded: the order was hit.
            # (Snapshots carry no trade size: such a hit fills what is left.)
            trade_px = quote.trade_px
            if trade_px is None or quote.trade_direction != (-1 if buy else 1):
                return _ZERO
            through = trade_px <= order.px if buy else trade_px >= order.px
            return remaining if through else _ZERO
        levels = quote.asks if buy else quote.bids
        if not self._by_depth or not levels:
            return remaining  # no book to size the fill by (a snapshot without levels)
        shown = sum((size for price, size in levels if (price <= order.px if buy else price >= order.px)), _ZERO)
        return min(remaining, shown)

    def _maker_price(self, order: OrderCtx) -> Decimal:
        """A resting fill's all-in price: the limit, moved by the maker fee (if any) against us."""
        assert order.px is not None
        if not self._maker_fee:
            return order.px
        fee = EXACT.multiply(order.px, self._maker_fee)
        return EXACT.add(order.px, fee) if order.side is Side.BUY else EXACT.subtract(order.px, fee)

    def _take_queued(self, resting: _Resting, quote: Quote, remaining: Decimal) -> Decimal:
        """`_take` with a queue in front of the order: what comes to its price fills the volume
        ahead of it first (see the module's docstring)."""
        order = resting.order
        assert order.px is not None
        buy = order.side is Side.BUY
        resting.ahead = min(resting.ahead, _shown_at(order, quote))
        touch = quote.ask if buy else quote.bid
        through_touch = touch < order.px if buy else touch > order.px
        at_touch = touch == order.px
        if not (through_touch or at_touch):
            trade_px = quote.trade_px
            if trade_px is None or quote.trade_direction != (-1 if buy else 1):
                return _ZERO
            if trade_px == order.px:
                return remaining if resting.ahead <= 0 else _ZERO  # no trade size: only at the front
            through = trade_px < order.px if buy else trade_px > order.px
            if through:
                resting.ahead = _ZERO
                return remaining
            return _ZERO
        levels = quote.asks if buy else quote.bids
        if not self._by_depth or not levels:
            if through_touch or resting.ahead <= 0:
                resting.ahead = _ZERO
                return remaining
            return _ZERO  # the touch sits at our price with volume still in front of us
        coming = sum((size for price, size in levels if (price <= order.px if buy else price >= order.px)), _ZERO)
        used = min(resting.ahead, coming)
        resting.ahead = EXACT.subtract(resting.ahead, used)
        return min(remaining, EXACT.subtract(coming, used))

    async def cancel(self, client_order_id: str) -> CancelResult:
        known = self._orders.get(client_order_id)
        resting = self._close(known.order) if known is not None else None
        if resting is None:
            # Never rested (it filled or expired at once), or already finished.
            return CancelResult(client_order_id=client_order_id, status=OrderStatus.REJECTED, reason="unknown_order")
        ack_ts_ms = self._now_ms + self._latency.sample_ms(self._rng, f"cancel|{client_order_id}")
        resting.status, resting.updated_ms = OrderStatus.CANCELED, ack_ts_ms
        return CancelResult(client_order_id=client_order_id, status=OrderStatus.CANCELED, ack_ts_ms=ack_ts_ms)

    async def amend(self, client_order_id: str, new_px: Decimal | None, new_qty: Decimal | None) -> AmendResult:
        # As the live venue: an amend would be a cancel-replace under a second client order id.
        known = self._orders.get(client_order_id)
        reason = "amend_unsupported" if known is not None and known.status in _OPEN else "unknown_order"
        return AmendResult(client_order_id=client_order_id, status=OrderStatus.REJECTED, reason=reason)

    async def query(self, client_order_id: str, symbol: str) -> ExecResult | None:
        resting = self._orders.get(client_order_id)
        return resting.result() if resting is not None else None

    def open_orders(self) -> int:
        return sum(len(orders) for orders in self._open.values())

    async def flush(self) -> None:
        return None

    async def close(self) -> None:
        return None


def _queue_ahead(order: OrderCtx, quote: Quote) -> Decimal:
    """Volume shown at the order's own price on its own side when it joins the book (none when
    the book shown does not tell)."""
    shown = _shown_at(order, quote)
    return _ZERO if shown == _UNKNOWN else shown


def _shown_at(order: OrderCtx, quote: Quote) -> Decimal:
    """The size the order's own side shows at its price; none when the level is absent from a
    book that shows prices beyond it (it traded or was cancelled away), or when the order
    improves on the best price. Unknown (a huge number: no change) when the book shown does not
    reach the order's price, or shows no levels at all."""
    assert order.px is not None
    buy = order.side is Side.BUY
    levels = quote.bids if buy else quote.asks
    if not levels:
        return _UNKNOWN
    for price, size in levels:
        if price == order.px:
            return size
    deepest = levels[-1][0]
    beyond = deepest < order.px if buy else deepest > order.px
    return _ZERO if beyond else _UNKNOWN
