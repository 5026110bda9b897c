"""Enumerations of contract v1. Values are the exact strings that travel on the wire."""

from __future__ import annotations

from enum import StrEnum


class Side(StrEnum):
    BUY = "BUY"
    SELL = "SELL"


class OrderType(StrEnum):
    LIMIT = "LIMIT"
    MARKET = "MARKET"


class TimeInForce(StrEnum):
    GTC = "GTC"
    IOC = "IOC"
    FOK = "FOK"


class Action(StrEnum):
    NEW = "NEW"
    CANCEL = "CANCEL"
    AMEND = "AMEND"


class OrderStatus(StrEnum):
    """Where an order is in its life; see `worker.contract.state_machine` for the transitions."""

    PENDING_NEW = "PENDING_NEW"  # built locally, not yet sent
    SUBMITTED = "SUBMITTED"  # an intent: committed with its request's expiry, then sent
    UNKNOWN = "UNKNOWN"  # sent, no usable answer: resolved by a query once every copy has expired
    ACCEPTED = "ACCEPTED"  # acknowledged by the venue, resting
    PARTIALLY_FILLED = "PARTIALLY_FILLED"
    PENDING_CANCEL = "PENDING_CANCEL"
    PENDING_AMEND = "PENDING_AMEND"
    FILLED = "FILLED"  # terminal
    CANCELED = "CANCELED"  # terminal
    EXPIRED = "EXPIRED"  # terminal (IOC/FOK remainder, venue expiry)
    REJECTED = "REJECTED"  # terminal: the venue said no
    DENIED = "DENIED"  # terminal: a local gate said no; never sent
    THROTTLED = "THROTTLED"  # terminal: a rate or sampling gate said no; never sent


TERMINAL_STATUSES: frozenset[OrderStatus] = frozenset(
    {
        OrderStatus.FILLED,
        OrderStatus.CANCELED,
        OrderStatus.EXPIRED,
        OrderStatus.REJECTED,
        OrderStatus.DENIED,
        OrderStatus.THROTTLED,
    }
)


class ExecutorKind(StrEnum):
    BACKTEST = "backtest"
    SANDBOX = "sandbox"
    BINANCE = "binance"
    SHADOW = "shadow"
