"""Malformed decisions, each with the error class it must be dead-lettered under.

Every entry is a distinct way a message can be wrong on the wire; the broker test interleaves
them with good decisions and checks that each lands in the DLQ exactly once, with its bytes.
"""

from __future__ import annotations

import orjson

from tests.factories import decision_dict


def _with(**overrides: object) -> bytes:
    return orjson.dumps(decision_dict(**overrides))


def _without(*fields: str) -> bytes:
    raw = decision_dict()
    for name in fields:
        del raw[name]
    return orjson.dumps(raw)


BAD_DECISIONS: list[tuple[str, bytes | None, str]] = [
    # (label, value bytes, expected error class)
    ("truncated json", b'{"signal_row_id": "x", "qty": ', "json"),
    ("not json at all", b"hello world", "json"),
    ("json array", b"[1, 2, 3]", "json"),
    ("json string", b'"a decision"', "json"),
    ("json number", b"42", "json"),
    ("json null", b"null", "json"),
    ("empty bytes", b"", "json"),
    ("tombstone", None, "json"),
    ("invalid utf-8", b'{"symbol": "\xff\xfe"}', "json"),
    ("trailing garbage", _with() + b"}}", "json"),
    ("oversized", b'{"pad":"' + b"x" * 70_000 + b'"}', "size"),
    ("missing symbol", _without("symbol"), "schema"),
    ("missing qty", _without("qty"), "schema"),
    ("missing several", _without("tick_size", "step_size", "min_notional"), "schema"),
    ("qty negative", _with(qty="-0.5"), "schema"),
    ("qty zero", _with(qty="0"), "schema"),
    ("qty as json number", _with(qty=0.5), "schema"),
    ("qty NaN", _with(qty="NaN"), "schema"),
    ("qty Infinity", _with(qty="Infinity"), "schema"),
    ("qty not a number", _with(qty="ten"), "schema"),
    ("qty too long", _with(qty="1" * 60), "schema"),
    ("px negative", _with(px="-64000"), "schema"),
    ("px zero", _with(px="0"), "schema"),
    ("px -Infinity", _with(px="-Infinity"), "schema"),
    ("px as bool", _with(px=True), "schema"),
    ("limit without px", _with(px=None), "schema"),
    ("tick size zero", _with(tick_size="0"), "schema"),
    ("step size negative", _with(step_size="-0.001"), "schema"),
    ("min notional negative", _with(min_notional="-5"), "schema"),
    ("costs negative", _with(costs_bps="-1"), "schema"),
    ("unknown side", _with(side="HOLD"), "schema"),
    ("lower-case side", _with(side="buy"), "schema"),
    ("unknown order type", _with(order_type="STOP"), "schema"),
    ("unknown tif", _with(tif="DAY"), "schema"),
    ("unknown action", _with(action="REPLACE"), "schema"),
    ("ts in seconds", _with(ts_ms=1_767_225_600), "schema"),
    ("ts in the far future", _with(event_ts_ms=9_999_999_999_999), "schema"),
    ("ts as string", _with(ts_ms="1767225600500"), "schema"),
    ("ts as float", _with(ts_ms=1.7672256e12), "schema"),
    ("symbol with slash", _with(symbol="BTC/USDT"), "schema"),
    ("symbol path traversal", _with(symbol="../../etc"), "schema"),
    ("symbol empty", _with(symbol=""), "schema"),
    ("warmup as string", _with(warmup="false"), "schema"),
    ("consistency above 1", _with(consistency=1.01), "schema"),
    ("consistency as string", _with(consistency="0.9"), "schema"),
    ("signal row id empty", _with(signal_row_id=""), "schema"),
    ("cancel without target", _with(action="CANCEL"), "schema"),
    ("amend without new values", _with(action="AMEND", target_client_order_id="ewabc"), "schema"),
    ("target id outside venue charset", _with(action="CANCEL", target_client_order_id="bad id!"), "schema"),
]
