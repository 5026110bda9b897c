"""Builders of valid contract messages for tests; override any field by keyword."""

from __future__ import annotations

from typing import Any

import orjson

BASE_DECISION: dict[str, Any] = {
    "signal_row_id": "row-1",
    "ts_ms": 1_767_225_600_500,
    "event_ts_ms": 1_767_225_600_000,
    "symbol": "BTCUSDT",
    "side": "BUY",
    "qty": "0.012345",
    "px": "64250.123",
    "order_type": "LIMIT",
    "tif": "GTC",
    "regime": "trend",
    "scenario": "base",
    "tick_size": "0.01",
    "step_size": "0.00001",
    "min_notional": "5",
    "warmup": False,
    "guard_reason": None,
    "consistency": 0.9,
    "weak_signal_throttle": False,
    "costs_bps": "4",
}


def decision_dict(**overrides: Any) -> dict[str, Any]:
    return {**BASE_DECISION, **overrides}


def decision_bytes(**overrides: Any) -> bytes:
    return orjson.dumps(decision_dict(**overrides))
