"""Differential tests: the compiled core (rust/execcore) against the Python oracle.

The compiled decoder must accept and refuse exactly what the pydantic contract does (with the
same error class), on messages generated from the contract's own JSON Schema, on mutations of
them and on the bad corpus; rounding, ids, slippage and the exec-event encoding must give the
same values byte for byte; the compiled replay fold must write the engine's events byte for byte.
"""

from __future__ import annotations

import asyncio
import json
import random
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from examples.gen_decisions import decisions as generated_decisions
from tests.bad_corpus import BAD_DECISIONS
from tests.factories import decision_dict
from tests.schema_strategies import from_schema
from worker.codec.errors import DecodeError
from worker.codec.json_codec import (
    DECISIONS_COMPILED,
    DEFAULT_MAX_MESSAGE_BYTES,
    EVENTS_COMPILED,
    decode_decision,
    decode_json_reference,
    encode_json,
    encode_json_reference,
)
from worker.contract.enums import OrderStatus, OrderType, Side, TimeInForce
from worker.contract.events import ExecEvent
from worker.contract.messages import Decision
from worker.contract.orders import SourceRef
from worker.core.backtest import BacktestExecutor
from worker.core.engine import EngineConfig, ExecutionEngine
from worker.core.slippage import slippage_bps, slippage_bps_reference
from worker.io.outbox import OutboxLine
from worker.policy.ids import client_order_id, client_order_id_reference
from worker.policy.rng import Rng
from worker.policy.rounding import PriceRounding, Rounded, RoundingError, align_order, align_order_reference
from worker.runtime.replay import list_sink, replay

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "examples" / "decisions.jsonl"
# The digest of the committed sample (seed 0, passive rounding, immediate fills); it changes
# only with the contract or the engine's rules, and then on purpose.
SAMPLE_DIGEST = "a6778260b4820ab76fcd7a4c636c93e4ffec136e17e9adee537969f7a6df171f"
DECISION_SCHEMA = json.loads((ROOT / "schemas/risk_contract/v1/decision.schema.json").read_text())
FAST = settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))


# -- decoding ---------------------------------------------------------------------------------


def test_the_compiled_core_knows_every_field_of_the_contract() -> None:
    # A new field in Decision or ExecEvent must be taught to rust/execcore (decision.rs,
    # engine.rs) and to the lists in worker/codec/json_codec.py; until then pydantic does the work.
    assert DECISIONS_COMPILED and EVENTS_COMPILED


def _verdict_reference(value: bytes | None) -> tuple[str | None, Decision | None]:
    try:
        return None, decode_json_reference(Decision, value, DEFAULT_MAX_MESSAGE_BYTES)
    except DecodeError as exc:
        return exc.error_class.value, None


def _verdict_compiled(value: bytes | None) -> tuple[str | None, Decision | None]:
    try:
        return None, decode_decision(value, DEFAULT_MAX_MESSAGE_BYTES)
    except DecodeError as exc:
        return exc.error_class.value, None


def _fields(decision: Decision) -> dict[str, tuple[type, str]]:
    # The type and the printed value: Decimal("0.10") == Decimal("0.1"), but they print apart.
    return {name: (type(value), repr(value)) for name, value in decision.__dict__.items()}


def assert_same_verdict(value: bytes | None) -> None:
    expected_class, expected = _verdict_reference(value)
    actual_class, actual = _verdict_compiled(value)
    assert actual_class == expected_class, value
    if expected is not None and actual is not None:
        assert _fields(actual) == _fields(expected)
        assert actual.model_fields_set == expected.model_fields_set
        assert actual == expected


@pytest.mark.parametrize(("label", "value", "error_class"), BAD_DECISIONS, ids=[b[0] for b in BAD_DECISIONS])
def test_the_bad_corpus_is_refused_alike(label: str, value: bytes | None, error_class: str) -> None:
    assert _verdict_compiled(value)[0] == error_class
    assert_same_verdict(value)


def test_the_refusal_keeps_the_contracts_wording() -> None:
    value = orjson.dumps(decision_dict(qty="-1"))
    with pytest.raises(DecodeError) as compiled:
        decode_decision(value)
    with pytest.raises(DecodeError) as reference:
        decode_json_reference(Decision, value)
    assert (compiled.value.error_class, compiled.value.reason) == (reference.value.error_class, reference.value.reason)


def test_the_sample_decodes_to_the_same_models() -> None:
    for line in SAMPLE.read_bytes().splitlines():
        assert_same_verdict(line)


@FAST
@given(from_schema(DECISION_SCHEMA))
def test_messages_from_the_json_schema_are_judged_alike(message: dict[str, Any]) -> None:
    assert_same_verdict(json.dumps(message).encode())


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=45),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)
FIELDS = list(DECISION_SCHEMA["properties"])
EDGE_STRINGS = st.sampled_from(
    [
        "",
        "0",
        "00",
        "0.0",
        "1.",
        ".5",
        "1e3",
        "1E-7",
        "-1",
        "+1",
        "0.000",
        "007.50",
        "1" * 40,
        "1" * 41,
        "0." + "0" * 37 + "1",
        "BUY",
        "SELL",
        "LIMIT",
        "MARKET",
        "GTC",
        "IOC",
        "FOK",
        "NEW",
        "CANCEL",
        "AMEND",
        "buy",
        "BTCUSDT",
        "B",
        "A" * 20,
        "A" * 21,
        "x" * 64,
        "x" * 65,
        "é" * 64,
        "é" * 65,
        "ew" + "a" * 34,
        "ew" + "a" * 35,
        "bad id",
        "ok.:/_-ID",
        "\x7f",
        "a\nb",
        "1767225600000",
    ]
)
EDGE_NUMBERS = st.sampled_from(
    [
        *(0, 1, -1, 0.0, 1.0, 0.5, 1.0000001, -0.0, 1.5e12, True, False, None, 2**64, 10**30),
        *(946_684_800_000, 946_684_799_999, 4_102_444_800_000, 4_102_444_800_001),
    ]
)


@FAST
@given(
    from_schema(DECISION_SCHEMA),
    st.lists(
        st.tuples(
            st.sampled_from([*FIELDS, "extra_field"]),
            st.one_of(st.just("<drop>"), EDGE_STRINGS, EDGE_NUMBERS, JSON_VALUES),
        ),
        min_size=1,
        max_size=4,
    ),
)
def test_mutated_messages_are_judged_alike(message: dict[str, Any], changes: list[tuple[str, Any]]) -> None:
    for name, value in changes:
        if value == "<drop>":
            message.pop(name, None)
        else:
            message[name] = value
    assert_same_verdict(json.dumps(message).encode())


@FAST
@given(st.binary(max_size=64) | st.text(max_size=40).map(str.encode))
def test_arbitrary_bytes_are_judged_alike(value: bytes) -> None:
    assert_same_verdict(value)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"a":1}  ',
        b"  \n" + orjson.dumps(decision_dict()) + b"\n ",
        orjson.dumps(decision_dict())[:-1] + b',"symbol":"ETHUSDT"}',  # a repeated key: the last wins
        orjson.dumps(decision_dict())[:-1] + b',"extra":[1,{"x":null}]}',
        orjson.dumps(decision_dict())[:-1] + b',"extra":1e400}',  # infinity to pydantic, ignored
        orjson.dumps(decision_dict())[:-1] + b',"extra":[-1e400,{"y":2e999}]}',
        orjson.dumps(decision_dict())[:-1] + b',"consistency":1e400}',
        orjson.dumps(decision_dict())[:-1] + b',"ts_ms":-1e400}',
        orjson.dumps(decision_dict())[:-1] + b',"extra":"\\ud800"}',
        orjson.dumps(decision_dict(consistency=1))[:-1] + b"}",
        orjson.dumps(decision_dict(regime="\\u00e9"))[:-1] + b"}",
        b'{"signal_row_id":"\\u0041"' + orjson.dumps(decision_dict())[1:],
        b"\xef\xbb\xbf" + orjson.dumps(decision_dict()),
        orjson.dumps(decision_dict(consistency=1e-320)),
    ],
)
def test_json_edge_cases_are_judged_alike(raw: bytes) -> None:
    assert_same_verdict(raw)


# -- rounding, ids, slippage ----------------------------------------------------------------


def plain_decimals(max_digits: int = 30) -> st.SearchStrategy[Decimal]:
    return st.builds(
        lambda digits, places: Decimal(digits).scaleb(-places),
        st.integers(min_value=1, max_value=10**max_digits),
        st.integers(min_value=0, max_value=12),
    ).map(lambda d: Decimal(format(d, "f")))


STEPS = st.one_of(
    st.sampled_from([Decimal(s) for s in ("1", "0.1", "0.01", "0.001", "0.00001", "0.5", "0.25", "5", "0.010", "10")]),
    plain_decimals(4),
)


def _same_rounding(args: tuple[Any, ...]) -> None:
    try:
        expected: Rounded | str = align_order_reference(*args)
    except RoundingError as exc:
        expected = exc.reason
    try:
        actual: Rounded | str = align_order(*args)
    except RoundingError as exc:
        actual = exc.reason
    if isinstance(expected, str) or isinstance(actual, str):
        assert actual == expected
        return
    assert (str(actual.qty), str(actual.px), actual.rounding_applied, str(actual.rounding_diff)) == (
        str(expected.qty),
        str(expected.px),
        expected.rounding_applied,
        str(expected.rounding_diff),
    )


@FAST
@given(
    st.sampled_from(list(Side)),
    plain_decimals(),
    st.none() | plain_decimals(),
    STEPS,
    STEPS,
    st.sampled_from([Decimal(0), Decimal(5), Decimal("10.5"), Decimal("0.00001")]),
    st.sampled_from(list(PriceRounding)),
)
def test_rounding_matches_the_python_rule(
    side: Side,
    qty: Decimal,
    px: Decimal | None,
    tick: Decimal,
    step: Decimal,
    min_notional: Decimal,
    rule: PriceRounding,
) -> None:
    _same_rounding((side, qty, px, tick, step, min_notional, rule))


def test_rounding_keeps_the_step_exponent_and_refuses_alike() -> None:
    cases = [
        (Side.BUY, "2.7370", "142.913", "0.01", "0.001", "5"),
        (Side.SELL, "100", "100", "0.010", "0.5", "0"),
        (Side.BUY, "0.0004", "10", "0.01", "0.001", "0"),
        (Side.BUY, "1", "0.004", "0.01", "0.001", "0"),
        (Side.SELL, "0.001", "1", "0.01", "0.001", "5"),
        (Side.BUY, "1" * 39, "9" * 39, "0." + "0" * 37 + "1", "0.25", "1"),
    ]
    for side, qty, px, tick, step, notional in cases:
        for rule in PriceRounding:
            _same_rounding((side, Decimal(qty), Decimal(px), Decimal(tick), Decimal(step), Decimal(notional), rule))


@FAST
@given(
    st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=128),
    st.integers(min_value=946_684_800_000, max_value=4_102_444_800_000),
    st.sampled_from(list(Side)),
    plain_decimals(40),
    st.none() | plain_decimals(40),
)
def test_client_order_ids_are_the_same(
    signal_row_id: str, ts_ms: int, side: Side, qty: Decimal, px: Decimal | None
) -> None:
    # 40 digits: beyond the 28 that the default context's normalize() keeps (it rounds).
    assert client_order_id(signal_row_id, ts_ms, side, qty, px) == client_order_id_reference(
        signal_row_id, ts_ms, side, qty, px
    )


@FAST
@given(st.sampled_from(list(Side)), plain_decimals(), plain_decimals())
def test_slippage_is_the_same(side: Side, px_intent: Decimal, px_fill: Decimal) -> None:
    assert repr(slippage_bps(side, px_intent, px_fill)) == repr(slippage_bps_reference(side, px_intent, px_fill))


# -- encoding -----------------------------------------------------------------------------------

TEXT = st.text(max_size=20)  # any code point but surrogates: control characters, quotes, non-ASCII
DECIMALS = st.decimals(allow_nan=False, allow_infinity=False, places=None).filter(lambda d: abs(d) < Decimal("1e30"))


@FAST
@given(
    st.fixed_dictionaries(
        {
            "event_id": TEXT,
            "client_order_id": TEXT,
            "signal_row_id": TEXT,
            "symbol": st.sampled_from(["BTCUSDT", "ETHUSDT"]),
            "side": st.sampled_from(list(Side)),
            "qty": DECIMALS,
            "px_intent": st.none() | DECIMALS,
            "px_sent": st.none() | DECIMALS,
            "px_fill": st.none() | DECIMALS,
            "qty_filled": DECIMALS,
            "rounding_applied": st.booleans(),
            "rounding_diff": DECIMALS,
            "slippage_bps": st.none() | DECIMALS,
            "exchange_order_id": st.none() | TEXT,
            "status": st.sampled_from(list(OrderStatus)),
            "reason": st.none() | TEXT,
            "sent_ts_ms": st.none() | st.integers(min_value=-(2**62), max_value=2**62),
            "ack_ts_ms": st.none() | st.integers(min_value=0, max_value=2**62),
            "event_ts_ms": st.integers(min_value=0, max_value=2**62),
            "latency_ms": st.none() | st.integers(min_value=-1000, max_value=10**6),
            "executor": TEXT,
            "mode": TEXT,
            "scenario": TEXT,
            # Added after v1: written only when set.
            "recv_window_ms": st.none() | st.integers(min_value=0, max_value=60_000),
            "attempt": st.none() | st.integers(min_value=1, max_value=9),
            "order_type": st.none() | st.sampled_from(list(OrderType)),
            "tif": st.none() | st.sampled_from(list(TimeInForce)),
            "observed": st.none() | st.lists(st.sampled_from(["warmup", "guard", "rate_wall", 'q"'])).map(tuple),
        }
    ),
    TEXT,
    st.integers(min_value=0, max_value=2**31),
    st.integers(min_value=0, max_value=2**62),
)
def test_exec_events_encode_byte_for_byte(fields: dict[str, Any], topic: str, partition: int, offset: int) -> None:
    source = SourceRef.model_construct(topic=topic, partition=partition, offset=offset)
    event = ExecEvent.model_construct(**fields, source=source)
    assert encode_json(event) == encode_json_reference(event)


# -- the replay fold ------------------------------------------------------------------------


def _replay(values: list[bytes], *, compiled: bool, seed: int = 0, rule: PriceRounding = PriceRounding.PASSIVE):
    lines: list[OutboxLine] = []
    engine = ExecutionEngine(BacktestExecutor(Rng(seed)), EngineConfig(rounding=rule))
    result = asyncio.run(replay(engine, values, [list_sink(lines)], compiled=compiled))
    return result, lines


def assert_same_replay(values: list[bytes], **options: Any) -> str:
    expected, expected_lines = _replay(values, compiled=False, **options)
    actual, actual_lines = _replay(values, compiled=True, **options)
    assert [line.payload for line in actual_lines] == [line.payload for line in expected_lines]
    assert actual_lines == expected_lines
    assert (actual.decisions, actual.events, actual.orders, actual.rejected, actual.digest) == (
        expected.decisions,
        expected.events,
        expected.orders,
        expected.rejected,
        expected.digest,
    )
    return actual.digest


def test_the_sample_replays_to_its_pinned_digest_both_ways() -> None:
    assert assert_same_replay(SAMPLE.read_bytes().splitlines()) == SAMPLE_DIGEST


def _stream(seed: int, count: int) -> list[bytes]:
    """Generated decisions with what a real stream also has: repeats, cancels and amends of
    earlier orders, bad lines, odd grids, guards and warm-up."""
    rng = random.Random(seed)
    values: list[bytes] = []
    for raw in generated_decisions(count, seed=seed):
        row: dict[str, Any] = dict(raw)
        roll = rng.random()
        if roll < 0.05:
            row["tick_size"] = rng.choice(["0.5", "0.25", "0.010", "5"])
        elif roll < 0.08:
            row["qty"] = "0.0000001"
        elif roll < 0.10:
            row["warmup"] = True
        elif roll < 0.12:
            row["guard_reason"] = rng.choice(["", "stale_book", 'quote"d\\'])
        elif roll < 0.14:
            row["action"] = rng.choice(["CANCEL", "AMEND"])
            row["target_client_order_id"] = "ew" + "0" * 32
            row["new_px"] = "1.5"
        elif roll < 0.16:
            row["scenario"] = "sc\u00e9nario\n\t\x01"
        value = orjson.dumps(row)
        values.append(value)
        if rng.random() < 0.03:
            values.append(value)  # a repeat: the same order id, dropped as a duplicate
        if rng.random() < 0.01:
            values.append(b'{"not": "a decision"}')
    return values


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_generated_streams_replay_byte_for_byte(seed: int) -> None:
    for rule in PriceRounding:
        assert_same_replay(_stream(seed, 1000), seed=seed, rule=rule)


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(from_schema(DECISION_SCHEMA), min_size=1, max_size=20), st.integers(min_value=0, max_value=2**31))
def test_schema_generated_streams_replay_byte_for_byte(messages: list[dict[str, Any]], seed: int) -> None:
    values = [json.dumps(message).encode() for message in messages]
    assume(any(_verdict_reference(v)[0] is None for v in values))
    assert_same_replay(values, seed=seed)
