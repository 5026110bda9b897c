"""Deterministic generator of sample decisions (risk_contract/v1), for demos, tests and benches.

    python examples/gen_decisions.py --count 3000 --seed 7 > examples/decisions.jsonl

The same (count, seed, start) always gives the same bytes. Prices follow a seeded random walk
per symbol; intents are deliberately off the venue grid so that rounding is exercised; a few
percent of rows carry warmup, a guard, a weak-signal flag or low consistency; a few are too
small for the venue's minimum notional.
"""

from __future__ import annotations

import argparse
import random
import sys
from collections.abc import Iterator
from decimal import Decimal

import orjson

# (symbol, start price, tick, step, min notional, typical order notional in USDT): Binance spot
# filters for these pairs at the time of writing.
SYMBOLS = (
    ("BTCUSDT", "64250.00", "0.01", "0.00001", "5", 500),
    ("ETHUSDT", "3120.00", "0.01", "0.0001", "5", 400),
    ("SOLUSDT", "142.50", "0.01", "0.001", "5", 300),
    ("BNBUSDT", "585.20", "0.01", "0.001", "5", 250),
    ("XRPUSDT", "0.5234", "0.0001", "0.1", "5", 200),
    ("DOGEUSDT", "0.12345", "0.00001", "1", "1", 150),
)
START_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
REGIMES = ("trend", "range", "volatile")
SCENARIOS = ("base", "aggressive", "defensive")
GUARDS = ("spread_wide", "stale_book", "vol_spike")


def decisions(count: int, seed: int, start_ms: int = START_MS) -> Iterator[dict[str, object]]:
    rng = random.Random(seed)
    prices = {s[0]: Decimal(s[1]) for s in SYMBOLS}
    ts = start_ms
    for row in range(count):
        symbol, _, tick, step, min_notional, notional = SYMBOLS[rng.randrange(len(SYMBOLS))]
        tick_d = Decimal(tick)
        # Random walk in ticks, kept positive; Decimal throughout.
        moved = prices[symbol] * (1 + Decimal(rng.randint(-30, 30)) / Decimal(10_000))
        prices[symbol] = max(moved.quantize(tick_d), tick_d * 10)
        ts += rng.randint(50, 3_000)
        side = "BUY" if rng.random() < 0.5 else "SELL"
        # Off-grid intent: one more decimal than the tick allows.
        offset = Decimal(rng.randint(-20, 20)) * tick_d / 10
        px = (prices[symbol] + offset).quantize(tick_d / 10)
        size = notional * (0.02 if rng.random() < 0.03 else rng.uniform(0.5, 2.0))
        qty = (Decimal(repr(round(size, 2))) / px).quantize(Decimal(step) / 10)
        market = rng.random() < 0.1
        roll = rng.random()
        yield {
            "signal_row_id": f"sig-{seed}-{row:07d}",
            "ts_ms": ts + rng.randint(1, 40),
            "event_ts_ms": ts,
            "symbol": symbol,
            "side": side,
            "qty": str(qty),
            "px": None if market else str(px),
            "order_type": "MARKET" if market else "LIMIT",
            "tif": "IOC" if market else rng.choice(("GTC", "GTC", "IOC")),
            "regime": rng.choice(REGIMES),
            "scenario": rng.choice(SCENARIOS),
            "tick_size": tick,
            "step_size": step,
            "min_notional": min_notional,
            "warmup": roll < 0.03,
            "guard_reason": rng.choice(GUARDS) if 0.03 <= roll < 0.06 else None,
            "consistency": round(rng.uniform(0.1, 0.45) if rng.random() < 0.1 else rng.uniform(0.5, 1.0), 3),
            "weak_signal_throttle": 0.06 <= roll < 0.08,
            "costs_bps": rng.choice(("4", "6", "7.5")),
        }


def market_snapshots(rows: list[dict[str, object]], seed: int) -> Iterator[dict[str, object]]:
    """A market.v1 snapshot shortly before each decision: a quote around the decision's price
    (2 bps spread, a seeded offset of up to +-10 bps) with five levels of depth each side."""
    rng = random.Random(seed + 1)
    for row in rows:
        if row["px"] is None:
            continue
        tick = Decimal(str(row["tick_size"]))
        mid = Decimal(str(row["px"])) * (1 + Decimal(rng.randint(-10, 10)) / Decimal(10_000))
        half = max(tick, (mid * Decimal("0.0001")).quantize(tick))
        bid = (mid - half).quantize(tick)
        ask = (mid + half).quantize(tick)
        size = Decimal(str(row["qty"])) * 2
        yield {
            "symbol": row["symbol"],
            "event_time_ms": int(str(row["event_ts_ms"])) - 1,
            "bid": str(bid),
            "ask": str(ask),
            "bids": [{"px": str(bid - tick * i), "qty": str(size)} for i in range(5)],
            "asks": [{"px": str(ask + tick * i), "qty": str(size)} for i in range(5)],
        }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--start-ms", type=int, default=START_MS)
    parser.add_argument("--market-out", help="also write matching market.v1 snapshots (JSONL) to this file")
    args = parser.parse_args()
    rows = list(decisions(args.count, args.seed, args.start_ms))
    out = sys.stdout.buffer
    for decision in rows:
        out.write(orjson.dumps(decision) + b"\n")
    if args.market_out:
        with open(args.market_out, "wb") as handle:
            for snapshot in market_snapshots(rows, args.seed):
                handle.write(orjson.dumps(snapshot) + b"\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
