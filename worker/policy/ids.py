"""Deterministic identifiers: the client order id is derived from the order, never drawn."""

from __future__ import annotations

import hashlib
import re
from decimal import Decimal

import execcore

from worker.contract.enums import Side

# Binance's newClientOrderId rule; every id we make must pass it.
CLIENT_ORDER_ID_PATTERN = re.compile(r"^[.A-Z:/a-z0-9_-]{1,36}$")
_PREFIX = "ew"
# 32 hex characters = 128 bits of SHA-256: collisions are out of reach for any order count, and
# "ew" + 32 = 34 characters stays inside the venue's 36-character limit.
_HASH_CHARS = 32


def client_order_id(signal_row_id: str, ts_ms: int, side: Side, qty: Decimal, px: Decimal | None) -> str:
    """`hash(signal_row_id|ts_ms|side|qty|px)` of the rounded order, in the venue's charset.

    Decimals are normalised first so that "0.10" and "0.1" give the same id. Computed by the
    compiled core; `client_order_id_reference` is the same rule in Python (its test oracle).
    """
    return execcore.client_order_id(signal_row_id, ts_ms, side.value, str(qty), None if px is None else str(px))


def client_order_id_reference(signal_row_id: str, ts_ms: int, side: Side, qty: Decimal, px: Decimal | None) -> str:
    """The id rule in Python: the oracle of the compiled `client_order_id`."""
    price = "MKT" if px is None else _canonical(px)
    material = f"{signal_row_id}|{ts_ms}|{side.value}|{_canonical(qty)}|{price}"
    return _PREFIX + hashlib.sha256(material.encode()).hexdigest()[:_HASH_CHARS]


def event_id(client_order_id: str, seq: int) -> str:
    """The `seq`-th event (1-based) of an order."""
    return f"{client_order_id}.{seq}"


def event_seq(event_id: str) -> int:
    """The position of an event in its order's life: `event_id`'s inverse."""
    return int(event_id.rpartition(".")[2])


def _canonical(value: Decimal) -> str:
    normalised = value.normalize()
    # normalize() turns 100 into 1E+2; print integers plainly.
    return format(normalised, "f")
