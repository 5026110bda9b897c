"""The part of the Binance spot REST protocol this project speaks: signing, error codes, statuses.

Shared by the live executor (client side) and the sandbox exchange (server side), so both agree
on the same bytes by construction.
"""

from __future__ import annotations

import hashlib
import hmac
from enum import IntEnum
from urllib.parse import urlencode

from worker.contract.enums import OrderStatus

API_KEY_HEADER = "X-MBX-APIKEY"
USED_WEIGHT_HEADER = "X-MBX-USED-WEIGHT-1M"
ORDER_COUNT_HEADER = "X-MBX-ORDER-COUNT-10S"


class ErrorCode(IntEnum):
    DISCONNECTED = -1001
    UNAUTHORIZED = -1002
    TOO_MANY_REQUESTS = -1003
    TIMEOUT = -1007  # "send status unknown; execution status unknown"
    INVALID_MESSAGE = -1013  # filter failures (PRICE_FILTER, LOT_SIZE, NOTIONAL)
    INVALID_TIMESTAMP = -1021
    INVALID_SIGNATURE = -1022
    MANDATORY_PARAM = -1102
    BAD_SYMBOL = -1121
    NEW_ORDER_REJECTED = -2010  # includes "Duplicate order sent."
    CANCEL_REJECTED = -2011  # "Unknown order sent."
    NO_SUCH_ORDER = -2013  # "Order does not exist."
    BAD_API_KEY = -2014
    REJECTED_MBX_KEY = -2015


# Venue order status -> our state machine.
VENUE_STATUS: dict[str, OrderStatus] = {
    "NEW": OrderStatus.ACCEPTED,
    "PARTIALLY_FILLED": OrderStatus.PARTIALLY_FILLED,
    "FILLED": OrderStatus.FILLED,
    "CANCELED": OrderStatus.CANCELED,
    "PENDING_CANCEL": OrderStatus.PENDING_CANCEL,
    "REJECTED": OrderStatus.REJECTED,
    "EXPIRED": OrderStatus.EXPIRED,
    "EXPIRED_IN_MATCH": OrderStatus.EXPIRED,
}


def sign(params: dict[str, str], secret: str) -> str:
    """HMAC-SHA256 (hex) of the url-encoded parameters, in the order given."""
    return hmac.new(secret.encode(), urlencode(params).encode(), hashlib.sha256).hexdigest()


def signed_query(params: dict[str, str], secret: str) -> str:
    return f"{urlencode(params)}&signature={sign(params, secret)}"


def verify_signature(total_params: str, signature: str, secret: str) -> bool:
    expected = hmac.new(secret.encode(), total_params.encode(), hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, signature)
