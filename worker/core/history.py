"""The takeover rebuild's fold of a partition's own exec-events into its order table.

`CompiledHistory` folds through the compiled core (rust/execcore/src/history.rs): each event is
decoded and folded in Rust, and a record's latest event stays bytes until someone reads
`record.last` (the engine does for open orders; most orders of a long history are closed).
`ReferenceHistory` is the same fold through the pydantic model and `OrderTable.apply`: the
differential oracle of tests/unit/test_history_fold.py, never used by the worker.

Both take the records of one fetch (anything with `.offset` and `.value`: JSON exec-events;
an Avro topic's values are turned into JSON by the caller first), and say which events to
re-publish to the outbox and which orders start (for the pre-trade policy's restore).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

import execcore

from worker.codec.errors import DecodeError, ErrorClass
from worker.codec.json_codec import DEFAULT_MAX_MESSAGE_BYTES, decode_json_reference, encode_json_reference
from worker.contract.enums import OrderStatus
from worker.contract.events import ExecEvent
from worker.contract.state_machine import IllegalTransition, is_terminal
from worker.core.order_table import OrderRecord, OrderTable
from worker.policy.pretrade import PolicyState, PreTradePolicy

log = logging.getLogger(__name__)


class UnreadableEvent(Exception):
    """The record at `offset` is not an exec-event: the model's `DecodeError` says why."""

    def __init__(self, offset: int, error: DecodeError) -> None:
        super().__init__(f"@{offset}: {error}")
        self.offset = offset
        self.error = error


class HistoryRecord(Protocol):
    @property
    def offset(self) -> int: ...

    @property
    def value(self) -> bytes | None: ...


class JsonRecord(NamedTuple):
    """A record whose value was turned into JSON (an Avro exec-event), or re-encoded canonically."""

    offset: int
    value: bytes | None


class Republish(NamedTuple):
    """An event to (re-)publish to the outbox: the line is the record's own JSON value."""

    symbol: str
    event_ts_ms: int
    event_id: str
    line: bytes


@dataclass
class FoldedHistory:
    table: OrderTable
    policy: PolicyState
    events_read: int
    # Highest input offset per topic seen in committed events: a lower bound for the position.
    source_high: dict[str, int] = field(default_factory=dict)


class RebuiltRecord(OrderRecord):
    """An order of a rebuilt table: its latest event is kept as the bytes the compiled decoder
    accepted and is decoded by the contract's model on first use."""

    __slots__ = ("_event", "_raw")
    _raw: bytes
    _event: ExecEvent | None

    @property
    def last(self) -> ExecEvent:
        event = self._event
        if event is None:
            event = decode_json_reference(ExecEvent, self._raw)
            object.__setattr__(self, "_event", event)
        return event


def _decode(offset: int, value: bytes | None, max_bytes: int) -> ExecEvent:
    try:
        return decode_json_reference(ExecEvent, value, max_bytes)
    except DecodeError as exc:
        raise UnreadableEvent(offset, exc) from None


def _log_illegal(where: str, client_order_id: str, current: OrderStatus, new: OrderStatus, event_id: str) -> None:
    log.error(
        "exec-events %s history: %s; event %s skipped",
        where,
        IllegalTransition(client_order_id, current, new),
        event_id,
    )


class CompiledHistory:
    """One partition's fold through the compiled core."""

    def __init__(self, where: str, policy: PreTradePolicy | None, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> None:
        self.where = where  # for log lines: "exec-events.v1[3]"
        self.policy = policy
        self.policy_state = PolicyState()
        self.max_bytes = max_bytes
        self._fold = execcore.HistoryFold(list(OrderStatus), max_bytes)
        if policy is not None and policy.walls_admit_all():
            self._fold.restore_once()  # only the first events that can change the policy's state

    def feed(self, records: Sequence[HistoryRecord], end: int, mark: int) -> list[Republish]:
        """Folds the records below offset `end`; returns the events at or after `mark`.
        Raises `UnreadableEvent` for a record the contract's model refuses."""
        out: list[Republish] = []
        start = 0
        while True:
            stopped, republish, firsts, illegal = self._fold.feed(records, start, end, mark)  # type: ignore[arg-type]
            self._take(records, republish, firsts, illegal, out)
            if stopped is None:
                return out
            # Not vouched for by the compiled decoder: the model decides (and words a refusal).
            record = records[stopped]
            event = _decode(record.offset, record.value, self.max_bytes)
            canonical = [JsonRecord(record.offset, encode_json_reference(event))]
            again, republish, firsts, illegal = self._fold.feed(canonical, 0, end, mark)
            if again is not None:
                too_big = DecodeError(ErrorClass.SCHEMA, "an integer beyond 64 bits: the compiled fold cannot hold it")
                raise UnreadableEvent(record.offset, too_big)
            self._take([record], republish, firsts, illegal, out)
            start = stopped + 1

    def feed_batches(
        self, batches: bytes, fetch_offset: int, end: int, mark: int, aborted: list[tuple[int, int]]
    ) -> tuple[int, bool, list[Republish]]:
        """Folds the records below offset `end` of one partition's fetched record batches (a
        read_committed Fetch response's records and aborted transactions) from `fetch_offset`
        on; returns (the next fetch offset, whether a batch there must be read another way,
        the events at or after `mark`). Raises `UnreadableEvent` as `feed`."""
        out: list[Republish] = []
        offset = fetch_offset
        while True:
            next_offset, unhandled, refused, republish, firsts, illegal = self._fold.feed_batches(
                batches, offset, end, mark, aborted
            )
            self._restore(firsts, illegal)
            out += [Republish(*event) for event in republish]
            if refused is None:
                return next_offset, unhandled, out
            # Not vouched for by the compiled decoder: `feed` asks the model.
            out += self.feed([JsonRecord(*refused)], end, mark)
            offset = refused[0] + 1

    def _restore(
        self, firsts: list[tuple[str, str, Any, str | None, int]], illegal: list[tuple[str, Any, Any, str]]
    ) -> None:
        for client_order_id, current, new, event_id in illegal:
            _log_illegal(self.where, client_order_id, current, new, event_id)
        policy = self.policy
        if policy is not None and firsts:
            policy.state = self.policy_state
            restore = policy.restore_order
            for mode, symbol, status, reason, event_ts_ms in firsts:
                restore(mode, symbol, status, reason, event_ts_ms)

    def _take(
        self,
        records: Sequence[HistoryRecord],
        republish: list[tuple[str, int, str, int]],
        firsts: list[tuple[str, str, Any, str | None, int]],
        illegal: list[tuple[str, Any, Any, str]],
        out: list[Republish],
    ) -> None:
        self._restore(firsts, illegal)
        for symbol, event_ts_ms, event_id, index in republish:
            value = records[index].value
            assert value is not None
            out.append(Republish(symbol, event_ts_ms, event_id, value))

    def finish(self) -> FoldedHistory:
        """The table: its open orders as records, its settled ones left in the fold until read."""
        table = OrderTable()
        settled = [i for i, status in enumerate(OrderStatus) if is_terminal(status)]
        table.restore(self._fold.take_unsettled(settled, RebuiltRecord), _Settled(self._fold))
        return FoldedHistory(table, self.policy_state, self._fold.events_read, self._fold.source_high())


class _Settled:
    """The fold's settled orders, as the table reads them (`SettledOrders`)."""

    __slots__ = ("_fold",)

    def __init__(self, fold: execcore.HistoryFold) -> None:
        self._fold = fold

    def take(self, client_order_id: str) -> OrderRecord | None:
        record: RebuiltRecord | None = self._fold.take(client_order_id, RebuiltRecord)
        return record

    def discard(self, client_order_id: str) -> bool:
        return self._fold.discard(client_order_id)

    def counts(self) -> dict[OrderStatus, int]:
        return self._fold.counts()

    def ids(self) -> list[str]:
        return self._fold.ids()

    def __len__(self) -> int:
        return len(self._fold)


class ReferenceHistory:
    """The same fold through the pydantic model and `OrderTable.apply`: the oracle in tests."""

    def __init__(self, where: str, policy: PreTradePolicy | None, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> None:
        self.where = where
        self.policy = policy
        self.max_bytes = max_bytes
        self.result = FoldedHistory(OrderTable(), PolicyState(), 0)

    def feed(self, records: Sequence[HistoryRecord], end: int, mark: int) -> list[Republish]:
        state = self.result
        out: list[Republish] = []
        for record in records:
            if record.offset >= end or record.value is None:
                continue
            event = _decode(record.offset, record.value, self.max_bytes)
            try:
                folded = state.table.apply(event)
            except IllegalTransition as exc:
                _log_illegal(self.where, exc.client_order_id, exc.current, exc.new, event.event_id)
            else:
                if self.policy is not None and folded.events == 1:
                    self.policy.state = state.policy
                    self.policy.restore(event)
            state.events_read += 1
            previous = state.source_high.get(event.source.topic, -1)
            state.source_high[event.source.topic] = max(previous, event.source.offset)
            if record.offset >= mark:
                out.append(Republish(event.symbol, event.event_ts_ms, event.event_id, record.value))
        return out

    def finish(self) -> FoldedHistory:
        self.result.table.commit()
        return self.result
