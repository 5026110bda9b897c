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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--start-ms", type=int, default=START_MS)
    args = parser.parse_args()
    out = sys.stdout.buffer
    for decision in decisions(args.count, args.seed, args.start_ms):
        out.write(orjson.dumps(decision) + b"\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
