"""Differential tests: the takeover rebuild's compiled fold (rust/execcore/src/history.rs, driven
by `worker.core.history.CompiledHistory`) against the pydantic fold it replaced
(`ReferenceHistory`: `codec.decode(ExecEvent, ...)` + `OrderTable.apply` + `policy.restore`).

On generated streams (legal and illegal transitions, intents with request expiries, cancels,
resends, two source topics, an outbox mark in the middle), on messages generated from the
exec-event JSON Schema and mutations of them, on JSON edge cases and on Avro-framed events: the
same order table (every field of every record, `last` included), the same events to re-publish,
the same policy state, the same counts, and the same refusal (offset and the model's message).
"""

from __future__ import annotations

import json
import logging
import random
from collections import Counter, deque
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tests.schema_strategies import from_schema
from worker.codec.errors import DecodeError
from worker.codec.json_codec import decode_json_reference, encode_json
from worker.codec.registry import FileSchemaRegistry
from worker.codec.wire import AvroWire
from worker.contract.enums import OrderStatus
from worker.contract.events import ExecEvent
from worker.core.history import (
    CompiledHistory,
    HistoryRecord,
    JsonRecord,
    RebuiltRecord,
    ReferenceHistory,
    UnreadableEvent,
)
from worker.policy.modes import ModeManager, ScenarioParams
from worker.policy.pretrade import PreTradePolicy
from worker.policy.rules import parse_rules
from worker.runtime.recovery import _canonical

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
EVENT_SCHEMA = json.loads((ROOT / "schemas/executor_contract/v1/exec_event.schema.json").read_text())
FAST = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
S = OrderStatus


def fold(
    kind: type[CompiledHistory] | type[ReferenceHistory],
    records: list[HistoryRecord],
    mark: int,
    policy: PreTradePolicy | None = None,
) -> Any:
    policy = PreTradePolicy.default() if policy is None else policy
    history = kind("exec[0]", policy)
    try:
        lines = []
        for start in range(0, len(records), 7):  # several fetches
            lines += history.feed(records[start : start + 7], end=len(records) + 1000, mark=mark)
        folded = history.finish()
    except UnreadableEvent as exc:
        return ("unreadable", exc.offset, str(exc.error))
    table = {
        coid: (r.status, r.events, r.expires_ms, r.attempt, r.venue_confirmed, r.cancel_requested, r.last, r.in_flight)
        for coid, r in sorted(folded.table.records().items())
    }
    assert len(folded.table) == len(table)
    by_status = folded.table.by_status()
    assert sorted(by_status.items()) == sorted(Counter(r[0] for r in table.values()).items())
    return (table, lines, folded.events_read, folded.source_high, snapshot(folded.policy))


def snapshot(value: Any) -> Any:
    """A structural copy of the policy state (its objects define no equality)."""
    if isinstance(value, dict):
        return {k: snapshot(v) for k, v in value.items()}
    if isinstance(value, list | tuple | deque):
        return [snapshot(v) for v in value]
    if hasattr(value, "__dict__") or hasattr(value, "__slots__"):
        names = list(getattr(value, "__dict__", {})) or list(getattr(value, "__slots__", ()))
        return (type(value).__name__, {n: snapshot(getattr(value, n, None)) for n in names})
    return value


def assert_same_fold(values: list[bytes | None], mark: int = 0) -> Any:
    records: list[HistoryRecord] = [JsonRecord(offset, value) for offset, value in enumerate(values)]
    expected = fold(ReferenceHistory, records, mark)
    actual = fold(CompiledHistory, records, mark)
    assert actual == expected
    return actual


def event_dict(rng: random.Random, coid: str, status: OrderStatus, offset: int, seq: int) -> dict[str, Any]:
    intent = status in (S.SUBMITTED, S.PENDING_CANCEL) and rng.random() < 0.7
    event: dict[str, Any] = {
        "event_id": f"{coid}.{seq}",
        "client_order_id": coid,
        "signal_row_id": f"sig-{offset}",
        "symbol": rng.choice(["BTCUSDT", "ETHUSDT", "SOLUSDT"]),
        "side": rng.choice(["BUY", "SELL"]),
        "qty": rng.choice(["0.01", "1", "12.5000"]),
        "px_intent": rng.choice([None, "100.25", "0.0001"]),
        "px_sent": rng.choice([None, "100.2"]),
        "px_fill": rng.choice([None, "100.3"]),
        "qty_filled": rng.choice(["0", "0.01"]),
        "rounding_applied": rng.random() < 0.5,
        "rounding_diff": rng.choice(["0", "-0.05", "0.001"]),
        "slippage_bps": rng.choice([None, "-1.25", "3"]),
        "exchange_order_id": rng.choice([None, None, f"x-{coid}"]),
        "status": status.value,
        "reason": rng.choice([None, "rate_limit", "per_symbol_rate", "warmup"]),
        "sent_ts_ms": rng.choice([None, 1_767_225_600_000 + offset * 10]),
        "ack_ts_ms": rng.choice([None, 1_767_225_600_004 + offset * 10]),
        "event_ts_ms": 1_767_225_600_000 + offset * 10,
        "latency_ms": rng.choice([None, 4]),
        "executor": rng.choice(["backtest", "binance"]),
        "mode": rng.choice(["default", "default", "not-a-mode"]),
        "scenario": "aggressive",
        "source": {"topic": rng.choice(["decisions", "venue-answers"]), "partition": 0, "offset": offset},
    }
    if intent:
        event["sent_ts_ms"] = 1_767_225_600_000 + offset * 10
        event["recv_window_ms"] = rng.choice([5000, 60_000])
        event["attempt"] = rng.choice([None, 0, 1, 2, 3])
        event["order_type"] = rng.choice(["LIMIT", "MARKET"])
        event["tif"] = rng.choice(["GTC", "IOC", "FOK"])
    if rng.random() < 0.1:
        event["observed"] = sorted(rng.sample(["warmup", "guard", "rate_wall"], 2))
    return event


def generated_stream(seed: int, count: int = 400) -> list[bytes | None]:
    """Orders walking the state machine (mostly legally), interleaved, a few tombstones."""
    rng = random.Random(seed)
    statuses = list(OrderStatus)
    live: dict[str, tuple[OrderStatus, int]] = {}
    values: list[bytes | None] = []
    for offset in range(count):
        if rng.random() < 0.02:
            values.append(None)
            continue
        if live and rng.random() < 0.6:
            coid = rng.choice(sorted(live))
            current, seq = live[coid]
            nexts = [s for s in statuses if s in _allowed(current)] or statuses
            status = rng.choice(statuses if rng.random() < 0.1 else nexts)
        else:
            coid = f"ew{rng.getrandbits(64):016x}"
            seq = 0
            status = rng.choice([S.SUBMITTED, S.DENIED, S.THROTTLED, S.FILLED, S.EXPIRED, S.ACCEPTED, S.CANCELED])
        live[coid] = (status, seq + 1)
        values.append(orjson.dumps(event_dict(rng, coid, status, offset, seq + 1)))
    return values


def _allowed(status: OrderStatus) -> frozenset[OrderStatus]:
    from worker.contract.state_machine import TRANSITIONS

    return TRANSITIONS[status]


@pytest.mark.parametrize("seed", range(8))
def test_generated_streams_fold_alike(seed: int, caplog: pytest.LogCaptureFixture) -> None:
    values = generated_stream(seed)
    with caplog.at_level(logging.ERROR, logger="worker.core.history"):
        table, lines, events_read, _, _ = assert_same_fold(values, mark=len(values) // 2)
    assert events_read == sum(v is not None for v in values)
    assert lines and len(table) > 20
    # The streams do hold what the fold has to get right.
    kinds = {(r[0], r[2] is not None, r[5]) for r in table.values()}
    assert any(expires for _, expires, _ in kinds) and any(cancel for _, _, cancel in kinds)
    assert "illegal transition" in caplog.text  # the skipped events were logged (by both folds)


NO_WALL = ScenarioParams(Decimal(2), Decimal(30), Decimal(20), Decimal(6), Decimal("0.01"), 0.0, 0.0)
RATED = ScenarioParams(Decimal(2), Decimal(30), Decimal(20), Decimal(6), Decimal("0.01"), 2.0, 100.0)
RULES = (
    {},
    {"rate_wall": "observe", "adaptive_throttle": "observe"},
    {"rate_wall": "off"},
    {
        "adaptive_throttle": "off",
        "modes": {"night": {"rate_wall": "off"}},
        "symbols": {"ETHUSDT": {"rate_wall": "observe"}},
    },
)


def modes_policy(night: ScenarioParams, rules: dict[str, Any]) -> PreTradePolicy:
    """Two modes (and the stream's unknown third), without rate limits or with them at night."""
    params = {"default": NO_WALL, "night": night}
    return PreTradePolicy(ModeManager(ZoneInfo("UTC"), params, "default", rules=parse_rules(rules, params)))


@pytest.mark.parametrize("rules", RULES)
@pytest.mark.parametrize("night", [NO_WALL, RATED], ids=["no-rate-limits", "rated"])
@pytest.mark.parametrize("seed", range(3))
def test_the_policy_restores_alike(seed: int, night: ScenarioParams, rules: dict[str, Any]) -> None:
    """The compiled fold reports an order's first event to the policy only when it can change the
    policy's state (with no rate limit anywhere: history.rs `Restores`), every one otherwise: the
    policy's modes, walls, buckets and tokens end the same as after the pydantic fold."""
    rng = random.Random(seed)
    modes = [b'"mode":"default"', b'"mode":"night"', b'"mode":"not-a-mode"']
    reasons = [b'"reason":"rate_symbol"', b'"reason":"rate_global"', b'"reason":"rate_limit"']
    values = [
        v
        if v is None
        else v.replace(b'"mode":"default"', rng.choice(modes))
        .replace(b'"mode":"not-a-mode"', rng.choice(modes))
        .replace(b'"reason":"rate_limit"', rng.choice(reasons))
        for v in generated_stream(seed, 600)
    ]
    assert any(b'"status":"THROTTLED","reason":"rate_global"' in v for v in values if v is not None)
    records: list[HistoryRecord] = [JsonRecord(offset, value) for offset, value in enumerate(values)]
    expected = fold(ReferenceHistory, records, 0, modes_policy(night, rules))
    actual = fold(CompiledHistory, records, 0, modes_policy(night, rules))
    assert actual == expected
    walls = expected[4][1]
    assert walls["wall"] is not None and walls["symbol_mode"].keys() == {"BTCUSDT", "ETHUSDT", "SOLUSDT"}


def test_a_rebuilt_table_reads_its_settled_orders_on_use() -> None:
    """Closed orders stay in the fold until read; the table answers as if it held them all."""
    values = generated_stream(4)
    records: list[HistoryRecord] = [JsonRecord(offset, value) for offset, value in enumerate(values)]
    tables = []
    for kind in (ReferenceHistory, CompiledHistory):
        history = kind("exec[0]", None)
        history.feed(records, end=10**9, mark=10**9)
        tables.append(history.finish().table)
    reference, rebuilt = tables
    assert len(rebuilt) == len(reference) and rebuilt.by_status() == reference.by_status()
    assert [r.last for r in rebuilt.open_orders()] == [r.last for r in reference.open_orders()]
    assert rebuilt.open_orders() and len(rebuilt._committed) == len(rebuilt.open_orders())  # only open ones built
    settled = sorted(set(reference._committed) - set(rebuilt._committed))
    for coid in settled[:5]:
        record = rebuilt.get(coid)
        assert record is not None and record.last == reference._committed[coid].last
        assert rebuilt.get(coid) is record and coid in rebuilt._committed  # read once, kept
    assert len(rebuilt) == len(reference) and rebuilt.by_status() == reference.by_status()
    assert rebuilt.get("never-seen") is None


def test_the_illegal_transitions_are_logged_alike(caplog: pytest.LogCaptureFixture) -> None:
    records: list[HistoryRecord] = [JsonRecord(i, v) for i, v in enumerate(generated_stream(3))]
    logged = []
    for kind in (ReferenceHistory, CompiledHistory):
        caplog.clear()
        with caplog.at_level(logging.ERROR, logger="worker.core.history"):
            fold(kind, records, 0)
        logged.append([r.getMessage() for r in caplog.records])
    assert logged[0] == logged[1] and logged[0]


def test_a_rebuilt_record_decodes_its_latest_event_on_first_use() -> None:
    values = generated_stream(5)
    history = CompiledHistory("exec[0]", None)
    history.feed([JsonRecord(i, v) for i, v in enumerate(values)], end=10**9, mark=10**9)
    table = history.finish().table
    records = table.records()
    record = records[next(iter(sorted(records)))]
    assert isinstance(record, RebuiltRecord) and record._event is None
    event = record.last
    assert isinstance(event, ExecEvent) and record.last is event  # decoded once
    assert table.get(event.client_order_id) is record


@FAST
@given(st.lists(from_schema(EVENT_SCHEMA), min_size=1, max_size=6), st.integers(min_value=0, max_value=6))
def test_messages_from_the_json_schema_fold_alike(messages: list[dict[str, Any]], mark: int) -> None:
    assume(all(fits_64_bits(m) and within_64_bits(json.dumps(m).encode()) for m in messages))
    assert_same_fold([json.dumps(m).encode() for m in messages], mark)


def fits_64_bits(value: Any) -> bool:
    """No integer beyond i64 (Kafka offsets and millisecond times are i64; see the test below)."""
    if isinstance(value, dict):
        return all(fits_64_bits(v) for v in value.values())
    if isinstance(value, list):
        return all(fits_64_bits(v) for v in value)
    return not isinstance(value, int) or -(2**63) <= value < 2**63


def within_64_bits(value: bytes) -> bool:
    """False for an event the model reads with an integer beyond i64 (also from a lax "123..."
    string) or a request expiry beyond i64: the known difference below."""
    try:
        event = decode_json_reference(ExecEvent, value)
    except DecodeError:
        return True
    sent, window = event.sent_ts_ms, event.recv_window_ms
    expiry_fits = sent is None or window is None or fits_64_bits(sent + window)
    return fits_64_bits(event.model_dump(mode="python")) and expiry_fits


def test_an_integer_beyond_64_bits_is_refused_loudly_by_the_compiled_fold() -> None:
    """The one known difference: pydantic reads any integer, the compiled fold i64 only. No
    worker can write such an event (Kafka offsets are i64, and the event encoder refuses them),
    so the rebuild stops loudly (HistoryUnreadable) instead of folding a number it cannot hold."""
    offset = orjson.dumps({**_valid(), "source": {"topic": "t", "partition": 0, "offset": 1}}).replace(
        b'"offset":1}', b'"offset":9223372036854775808}'
    )
    expiry = orjson.dumps({**_valid(), "sent_ts_ms": 2**63 - 10, "recv_window_ms": 60_000})
    for value in (offset, expiry):
        records: list[HistoryRecord] = [JsonRecord(0, value)]
        assert fold(ReferenceHistory, records, 0)[2] == 1
        refused = ("unreadable", 0, "schema: an integer beyond 64 bits: the compiled fold cannot hold it")
        assert fold(CompiledHistory, records, 0) == refused


EDGE_VALUES = st.sampled_from(
    [
        "<drop>",
        None,
        *(0, 1, -1, 1.0, 1.5, True, False, 2**63 - 1, -(2**63), 10**30),
        *("", "x", "0", "-0", "1e5", "1.", ".5", "-1.5", "0.000", "BTC", "btcusdt", "A" * 21, "5", "true"),
        *("FILLED", "SUBMITTED", "PENDING_CANCEL", "BUY", "LIMIT", "IOC", "warmup", "1" * 41),
        [],
        ["warmup"],
        ["Warmup"],
        {},
        {"topic": "t", "partition": 0, "offset": 1},
        {"topic": "t", "partition": -1, "offset": 1},
        {"topic": "t", "partition": 0, "offset": 1, "extra": 1},
        {"topic": 1, "partition": 0, "offset": 1},
        {"topic": "t", "partition": "0", "offset": 1},
    ]
)
FIELDS = [*EVENT_SCHEMA["properties"], "extra_field"]


@FAST
@given(
    st.integers(min_value=0, max_value=2**31),
    st.lists(st.tuples(st.sampled_from(FIELDS), EDGE_VALUES), min_size=1, max_size=3),
)
def test_mutated_events_fold_alike(seed: int, changes: list[tuple[str, Any]]) -> None:
    rng = random.Random(seed)
    first = event_dict(rng, "ewa", S.SUBMITTED, 0, 1)
    second = event_dict(rng, "ewa", S.FILLED, 1, 2)
    for name, value in changes:
        if value == "<drop>":
            second.pop(name, None)
        else:
            second[name] = value
    value = json.dumps(second).encode()
    assume(within_64_bits(value))  # the known difference, tested above
    assert_same_fold([orjson.dumps(first), value])


def _valid() -> dict[str, Any]:
    return event_dict(random.Random(1), "ewb", S.SUBMITTED, 3, 1)


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"not json",
        b"[1, 2]",
        b'"FILLED"',
        orjson.dumps(_valid()) + b"  \n",
        orjson.dumps(_valid())[:-1] + b',"status":"FILLED"}',  # a repeated key
        orjson.dumps(_valid())[:-1] + b',"extra":1e400}',
        orjson.dumps({**_valid(), "attempt": "2"}),  # lax ints: the model decides
        orjson.dumps({**_valid(), "rounding_applied": 1}),
        orjson.dumps({**_valid(), "event_ts_ms": 1.0}),
        orjson.dumps({**_valid(), "reason": "\u00e9\u00e9"}),
        b'{"event_id":"\\u0041"' + orjson.dumps(_valid())[1:],
        orjson.dumps(_valid())[:-1] + b',"extra":"\\ud800"}',
        b"\xef\xbb\xbf" + orjson.dumps(_valid()),
        orjson.dumps(_valid()) * 2,
    ],
)
def test_json_edge_cases_fold_alike(raw: bytes) -> None:
    assert_same_fold([orjson.dumps(event_dict(random.Random(2), "ewb", S.SUBMITTED, 0, 1)), raw, None])


def test_a_value_beyond_the_size_limit_is_refused_alike() -> None:
    big = orjson.dumps({**_valid(), "reason": "r" * 2_000_000})
    outcome = assert_same_fold([big])
    assert outcome[0] == "unreadable" and outcome[1] == 0 and "limit" in outcome[2]


def test_avro_framed_events_fold_alike_and_republish_canonical_json() -> None:
    wire = AvroWire(FileSchemaRegistry(ROOT / "schemas" / "registry.json"), "executor_contract/v1/exec_event")
    models = [decode_json_reference(ExecEvent, v) for v in generated_stream(11) if v is not None]
    framed = [wire.encode(m) for m in models]
    assert all(f[0] == 0 for f in framed)
    as_json = [wire.json_of(f) for f in framed]
    table, lines, events_read, _, _ = assert_same_fold(list(as_json), mark=10)
    assert len(table) == len({m.client_order_id for m in models})
    assert events_read == len(models)
    # What rebuild_partitions writes to the outbox for an Avro topic: the model's canonical JSON.
    assert [_canonical(line.line) for line in lines] == [encode_json(m) for m in models[10:]]
