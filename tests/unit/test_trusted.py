"""`contract.trusted`: the same model as validation builds, or a TypeError for a wrong call."""

from decimal import Decimal

import pytest
from pydantic import BaseModel, Field

from worker.contract.enums import OrderStatus
from worker.contract.orders import ExecResult, SourceRef
from worker.contract.trusted import trusted, trusted_fields


def test_trusted_builds_what_validation_builds() -> None:
    given = {"status": OrderStatus.FILLED, "px_fill": Decimal("1.5"), "qty_filled": Decimal(2), "ack_ts_ms": 7}
    built = trusted(ExecResult, **given)
    validated = ExecResult(**given)
    assert built == validated
    assert list(built.__dict__) == list(validated.__dict__)  # declared order: canonical JSON
    assert built.model_fields_set == validated.model_fields_set == set(given)
    assert built.model_dump_json() == validated.model_dump_json()


def test_trusted_instances_do_not_share_their_fields() -> None:
    first = trusted(SourceRef, topic="a", partition=0, offset=1)
    second = trusted(SourceRef, topic="b", partition=1, offset=2)
    assert first.__dict__ is not second.__dict__
    assert (first.topic, second.topic) == ("a", "b")


def test_a_missing_or_unknown_field_is_a_type_error() -> None:
    with pytest.raises(TypeError, match=r"missing fields \['offset'\]"):
        trusted(SourceRef, topic="a", partition=0)
    with pytest.raises(TypeError, match=r"unknown fields \['bogus'\]"):
        trusted(SourceRef, topic="a", partition=0, offset=1, bogus=1)


def test_a_default_factory_model_is_refused() -> None:
    class WithFactory(BaseModel):
        items: list[int] = Field(default_factory=list)

    with pytest.raises(TypeError, match="default_factory"):
        trusted(WithFactory)


def test_trusted_fields_takes_every_field_in_declared_order() -> None:
    given = {"topic": "a", "partition": 0, "offset": 1}
    built = trusted_fields(SourceRef, dict(given))
    assert built == SourceRef(**given) and built.model_fields_set == set(given)
    with pytest.raises(TypeError, match="in order"):
        trusted_fields(SourceRef, {"partition": 0, "topic": "a", "offset": 1})
    with pytest.raises(TypeError, match="in order"):
        trusted_fields(SourceRef, {"topic": "a", "partition": 0})
