"""An input record -> the command it asks for, or the reason it goes to the DLQ. Pure.

A decision is decoded as it is; a signal becomes a decision through the current mode's signal
rules (policy/signals.py) or asks for nothing. Then two checks every command passes: it was read
from the partition its symbol maps to (the same decision on two partitions would be two orders),
and its symbol is on the allow-list.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from worker.codec.errors import DecodeError, ErrorClass
from worker.codec.wire import WireCodec
from worker.contract.messages import Decision, Signal
from worker.core.dlq import InputRecord
from worker.policy.pretrade import PreTradePolicy
from worker.policy.signals import MissingFilters, signal_command


class Routing(Protocol):
    """Where a symbol's records belong (io/partitioner.py); None: not checked."""

    def expected_partition(self, topic: str, symbol: str) -> int | None: ...

    def describe(self, topic: str) -> str: ...


@dataclass(frozen=True)
class Intake:
    codecs: Mapping[str, WireCodec]  # per input topic
    signals_topic: str
    policy: PreTradePolicy
    routing: Routing | None = None
    symbols: frozenset[str] | None = None  # allow-list; None accepts every well-formed symbol

    def command(self, record: InputRecord) -> Decision | None:
        """The record's command; None for a signal that asks for no action. Raises DecodeError."""
        codec = self.codecs[record.topic]
        decision: Decision | None
        if record.topic == self.signals_topic:
            signal = codec.decode(Signal, record.value)
            try:
                # The signal rules, shared with the replay of every input (policy/signals.py).
                decision = signal_command(signal, self.policy)
            except MissingFilters as exc:
                raise DecodeError(ErrorClass.CONFIG, str(exc)) from None
        else:
            decision = codec.decode(Decision, record.value)
        if decision is None:
            return None
        self._check_routing(record, decision)
        if self.symbols is not None and decision.symbol not in self.symbols:
            raise DecodeError(ErrorClass.SYMBOL, f"symbol {decision.symbol} is not in the configured list")
        return decision

    def _check_routing(self, record: InputRecord, decision: Decision) -> None:
        expected = None if self.routing is None else self.routing.expected_partition(record.topic, decision.symbol)
        if expected is not None and expected != record.partition:
            assert self.routing is not None
            raise DecodeError(
                ErrorClass.MISROUTED,
                f"symbol {decision.symbol} belongs to partition {expected} of {record.topic} "
                f"({self.routing.describe(record.topic)}) but was read from partition {record.partition}; "
                "produce it keyed by symbol (docs/operations.md)",
            )
