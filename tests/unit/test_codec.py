from decimal import Decimal

import orjson
import pytest

from tests.factories import decision_bytes, decision_dict
from worker.codec.errors import DecodeError, ErrorClass
from worker.codec.json_codec import decode_json, encode_json
from worker.contract.messages import Decision


def test_a_valid_decision_decodes_with_exact_decimals() -> None:
    decision = decode_json(Decision, decision_bytes(qty="0.10000000000000001"))
    assert decision.qty == Decimal("0.10000000000000001")
    assert decision.px == Decimal("64250.123")


def test_unknown_fields_are_ignored_for_forward_compatibility() -> None:
    decision = decode_json(Decision, decision_bytes(new_upstream_field={"x": 1}))
    assert decision.symbol == "BTCUSDT"


@pytest.mark.parametrize(
    ("raw", "error_class", "needle"),
    [
        (b"{", ErrorClass.JSON, "not valid JSON"),
        (b"[1,2]", ErrorClass.JSON, "expected a JSON object"),
        (None, ErrorClass.JSON, "empty message"),
        (b"x" * 70_000, ErrorClass.SIZE, "limit"),
        (decision_bytes(qty="-1"), ErrorClass.SCHEMA, "qty"),
        (decision_bytes(qty="0"), ErrorClass.SCHEMA, "qty: expected a positive decimal"),
        (decision_bytes(qty="0.000"), ErrorClass.SCHEMA, "qty: expected a positive decimal"),
        (decision_bytes(qty=1.5), ErrorClass.SCHEMA, "as a JSON string"),
        (decision_bytes(qty="1e-3"), ErrorClass.SCHEMA, "plain notation"),
        (decision_bytes(px="NaN"), ErrorClass.SCHEMA, "px: expected a positive decimal"),
        (decision_bytes(px="abc"), ErrorClass.SCHEMA, "px: expected a positive decimal"),
        (decision_bytes(min_notional="-1"), ErrorClass.SCHEMA, "non-negative decimal"),
        (decision_bytes(side="HOLD"), ErrorClass.SCHEMA, "side"),
        (decision_bytes(ts_ms=1_700_000_000), ErrorClass.SCHEMA, "ts_ms"),
        (decision_bytes(symbol="btc/usdt"), ErrorClass.SCHEMA, "symbol"),
        (decision_bytes(warmup="no"), ErrorClass.SCHEMA, "warmup"),
        (decision_bytes(consistency=1.5), ErrorClass.SCHEMA, "consistency"),
        (decision_bytes(px=None), ErrorClass.SCHEMA, "LIMIT order needs px"),
        (decision_bytes(action="CANCEL"), ErrorClass.SCHEMA, "target_client_order_id"),
    ],
)
def test_bad_input_is_refused_with_a_specific_reason(raw: bytes | None, error_class: ErrorClass, needle: str) -> None:
    with pytest.raises(DecodeError) as excinfo:
        decode_json(Decision, raw)
    assert excinfo.value.error_class is error_class
    assert needle in excinfo.value.reason


def test_a_missing_field_is_named() -> None:
    raw = decision_dict()
    del raw["tick_size"]
    with pytest.raises(DecodeError, match="tick_size: Field required"):
        decode_json(Decision, orjson.dumps(raw))


def test_decimals_are_written_in_plain_notation_so_output_parses_as_input() -> None:
    decision = decode_json(Decision, decision_bytes(step_size="0.00000001"))
    assert decision.step_size == Decimal("1E-8")
    wire = encode_json(decision)
    assert b'"step_size":"0.00000001"' in wire
    assert decode_json(Decision, wire) == decision


def test_encoding_is_canonical_and_keeps_decimal_strings() -> None:
    decision = decode_json(Decision, decision_bytes())
    first = encode_json(decision)
    assert first == encode_json(decode_json(Decision, first))
    assert b'"qty":"0.012345"' in first
    assert b" " not in first
