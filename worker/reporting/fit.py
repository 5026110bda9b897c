"""Calibrating the backtest's fill and latency models from live fills (`execworker diff --fit`).

What is fitted, and from which orders:

- The cost of a fill, `cost_bps = sign * (px_fill - reference) / reference * 10,000`, over the
  live orders that filled at once (their first answer carried the fill: taker), with the same
  reference the cost models use (worker/core/fills.py): with market data, the touch (ask
  for a BUY, bid for a SELL) at the order's acknowledgement (decision time + live latency);
  without, a MARKET order's `px_intent` (a LIMIT without market data is modelled as resting at
  its price: no parameter to fit). The model rounds its price to the tick against us, which adds
  half a tick on average; with the tick known (decisions) that half tick is taken off each cost.
  - `fixed_bps`: BPS = the mean corrected cost.
  - `sqrt_impact:ADV` (ADV given): cost = K * sqrt(qty / ADV); K by least squares through 0.
  Per regime (from the decisions) with at least `min_orders` fills, and `*` over all of them.
- Latency (one model per run): `base + floor(Exp(mean))` (worker/core/latency.py). base =
  the smallest live latency; the floored extra is geometric, whose maximum-likelihood mean is
  `1 / ln(1 + 1 / E)` for the observed mean extra E.

The result prints as the `execworker replay` flags that use it: `--fill-model
'by_regime:R=SPEC,...,*=SPEC' --latency BASE:MEAN`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal

from worker.contract.enums import Side
from worker.contract.messages import Decision
from worker.core.market import MarketView
from worker.reporting.diff import Outcome

_BPS = Decimal(10_000)
_PLACES = Decimal("0.01")
ALL = "*"


@dataclass(frozen=True, slots=True)
class Sample:
    regime: str
    qty: Decimal
    cost_bps: Decimal  # after the half-tick correction


@dataclass(frozen=True, slots=True)
class FitResult:
    model: str  # fixed_bps | sqrt_impact
    adv: Decimal | None
    params: dict[str, Decimal]  # regime (and "*") -> bps or K
    counts: dict[str, int]
    latency_base_ms: int | None
    latency_mean_extra_ms: Decimal | None
    latency_orders: int

    def spec(self, regime: str) -> str:
        value = format(self.params[regime], "f")
        return f"fixed_bps:{value}" if self.model == "fixed_bps" else f"sqrt_impact:{value}:{self.adv}"

    def fill_model_spec(self) -> str | None:
        if ALL not in self.params:
            return None
        parts = [f"{regime}={self.spec(regime)}" for regime in sorted(self.params) if regime != ALL]
        return "by_regime:" + ",".join([*parts, f"{ALL}={self.spec(ALL)}"])

    def latency_spec(self) -> str | None:
        if self.latency_base_ms is None or self.latency_mean_extra_ms is None:
            return None
        return f"{self.latency_base_ms}:{self.latency_mean_extra_ms}"

    def replay_flags(self) -> str:
        flags = []
        if (spec := self.fill_model_spec()) is not None:
            flags.append(f"--fill-model '{spec}'")
        if (latency := self.latency_spec()) is not None:
            flags.append(f"--latency {latency}")
        return " ".join(flags)


def _sign(side: Side) -> Decimal:
    return Decimal(1) if side is Side.BUY else Decimal(-1)


def samples(
    live: Iterable[Outcome], decisions: Mapping[str, Decision], market: MarketView | None = None
) -> list[Sample]:
    """The live taker fills with a reference price, sorted by order id (deterministic sums)."""
    out: list[tuple[str, Sample]] = []
    for order in live:
        if order.px_fill is None or not order.taker:
            continue
        if market is not None:
            quote = market.quote_at(order.symbol, order.decision_ts_ms + (order.latency_ms or 0))
            reference = None if quote is None else (quote.ask if order.side is Side.BUY else quote.bid)
        else:
            reference = order.px_intent if order.px_sent is None else None
        if reference is None or reference <= 0:
            continue
        decision = decisions.get(order.signal_row_id)
        cost = _sign(order.side) * (order.px_fill - reference) / reference * _BPS
        if decision is not None:
            cost -= decision.tick_size / 2 / reference * _BPS
        regime = decision.regime if decision is not None else ""
        out.append((order.client_order_id, Sample(regime, order.qty, cost)))
    out.sort(key=lambda item: item[0])
    return [sample for _, sample in out]


def _fixed(costs: Sequence[Sample]) -> Decimal:
    return sum((s.cost_bps for s in costs), Decimal(0)) / len(costs)


def _sqrt_k(costs: Sequence[Sample], adv: Decimal) -> Decimal:
    xs = [(s.qty / adv).sqrt() for s in costs]
    denominator = sum((x * x for x in xs), Decimal(0))
    if denominator == 0:
        return Decimal(0)
    return sum((x * s.cost_bps for x, s in zip(xs, costs, strict=True)), Decimal(0)) / denominator


def fit_latency(latencies: Iterable[int]) -> tuple[int, Decimal] | None:
    values = sorted(latencies)
    if not values:
        return None
    base = values[0]
    extra = Decimal(sum(v - base for v in values)) / len(values)
    if extra == 0:
        return base, Decimal(0)
    mean = 1 / (1 + 1 / extra).ln()
    return base, mean.quantize(_PLACES, rounding=ROUND_HALF_EVEN)


def fit(
    live: Mapping[str, Outcome],
    decisions: Mapping[str, Decision],
    market: MarketView | None = None,
    model: str = "fixed_bps",
    adv: Decimal | None = None,
    min_orders: int = 20,
) -> FitResult:
    if model not in ("fixed_bps", "sqrt_impact"):
        raise ValueError(f"--fit-model {model}: use fixed_bps or sqrt_impact:ADV")
    if model == "sqrt_impact" and (adv is None or adv <= 0):
        raise ValueError("--fit-model sqrt_impact needs a positive ADV: sqrt_impact:ADV")
    ordered = [live[coid] for coid in sorted(live)]
    found = samples(ordered, decisions, market)
    groups: dict[str, list[Sample]] = defaultdict(list)
    for sample in found:
        if sample.regime:
            groups[sample.regime].append(sample)
    if found:
        groups[ALL] = found
    params: dict[str, Decimal] = {}
    counts: dict[str, int] = {}
    for regime, group in sorted(groups.items()):
        if regime != ALL and len(group) < min_orders:
            continue
        value = _fixed(group) if model == "fixed_bps" else _sqrt_k(group, adv or Decimal(1))
        params[regime] = value.quantize(_PLACES, rounding=ROUND_HALF_EVEN)
        counts[regime] = len(group)
    latency_values = [o.latency_ms for o in ordered if o.latency_ms is not None]
    latency = fit_latency(latency_values)
    return FitResult(
        model=model,
        adv=adv,
        params=params,
        counts=counts,
        latency_base_ms=latency[0] if latency else None,
        latency_mean_extra_ms=latency[1] if latency else None,
        latency_orders=len(latency_values),
    )


def fit_lines(result: FitResult) -> list[str]:
    lines = [f"fit of {result.model} to live taker fills (per regime, * = all):"]
    for regime in sorted(result.params):
        unit = "bps" if result.model == "fixed_bps" else f"K bps (ADV {result.adv})"
        lines.append(f"  {regime:<12} {result.params[regime]} {unit}  over {result.counts[regime]} fills")
    if not result.params:
        lines.append("  no live taker fill with a reference price (pass --market, or the live run had none)")
    if result.latency_base_ms is not None:
        lines.append(
            f"latency: base {result.latency_base_ms} ms + exponential mean {result.latency_mean_extra_ms} ms"
            f" over {result.latency_orders} orders"
        )
    flags = result.replay_flags()
    if flags:
        lines.append(f"replay with: execworker replay ... {flags}")
    return lines
