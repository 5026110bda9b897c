"""The Quix Streams contender of `make bench-compare`: exactly-once, the same transform as the
worker's hot path (parse, Decimal rounding to the venue grid, client order id, an exec-event).

Runs in the bench-only environment (.venv-bench, requirements-bench.lock): Quix Streams pins
its own pydantic, so this file imports nothing from `worker` and repeats the rules it needs in
plain Python (they are the rules of worker/policy/rounding.py and worker/policy/ids.py).
Prints one JSON line: {"messages": N, "seconds": S}.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from decimal import ROUND_CEILING, ROUND_FLOOR, Context, Decimal
from typing import Any

import orjson
from quixstreams import Application

EXACT = Context(prec=100)


def _grid(value: Decimal, step: Decimal, rounding: str) -> Decimal:
    units = EXACT.divide(value, step).to_integral_value(rounding=rounding, context=EXACT)
    return EXACT.multiply(units, step).quantize(step, context=EXACT)


def _canonical(value: Decimal) -> str:
    return format(value.normalize(), "f")


def transform(value: bytes) -> dict[str, Any]:
    d = orjson.loads(value)
    side = d["side"]
    qty = _grid(Decimal(d["qty"]), Decimal(d["step_size"]), ROUND_FLOOR)
    px = None
    if d["px"] is not None:
        px = _grid(Decimal(d["px"]), Decimal(d["tick_size"]), ROUND_FLOOR if side == "BUY" else ROUND_CEILING)
    material = f"{d['signal_row_id']}|{d['ts_ms']}|{side}|{_canonical(qty)}|{'MKT' if px is None else _canonical(px)}"
    coid = "ew" + hashlib.sha256(material.encode()).hexdigest()[:32]
    return {
        "event_id": f"{coid}.1",
        "client_order_id": coid,
        "signal_row_id": d["signal_row_id"],
        "symbol": d["symbol"],
        "side": side,
        "qty": format(qty, "f"),
        "px_intent": d["px"],
        "px_sent": None if px is None else format(px, "f"),
        "status": "FILLED" if px is not None or d["order_type"] == "MARKET" else "REJECTED",
        "event_ts_ms": d["event_ts_ms"],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--count", type=int, required=True)
    args = parser.parse_args()
    app = Application(
        broker_address=args.bootstrap,
        consumer_group=args.group,
        auto_offset_reset="earliest",
        processing_guarantee="exactly-once",
        loglevel="WARNING",
        use_changelog_topics=False,
    )
    source = app.topic(args.input, value_deserializer="bytes", key_deserializer="bytes")
    sink = app.topic(args.output, value_serializer="json", key_serializer="bytes")
    frame = app.dataframe(source).apply(transform)
    frame.to_topic(sink)
    started = time.perf_counter()
    app.run(count=args.count, collect=False)
    print(json.dumps({"messages": args.count, "seconds": round(time.perf_counter() - started, 3)}))


if __name__ == "__main__":
    main()
