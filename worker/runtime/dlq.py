"""Building a DLQ record from a message the worker could not use."""

from __future__ import annotations

import base64

from aiokafka.structs import ConsumerRecord

from worker.codec.errors import DecodeError
from worker.contract.events import DlqRecord, Header
from worker.contract.orders import SourceRef


def _b64(raw: bytes | None) -> str | None:
    return None if raw is None else base64.b64encode(raw).decode("ascii")


def dlq_record(record: ConsumerRecord[bytes, bytes], error: DecodeError) -> DlqRecord:
    return DlqRecord(
        source=SourceRef(topic=record.topic, partition=record.partition, offset=record.offset),
        error_class=error.error_class.value,
        reason=error.reason,
        key_b64=_b64(record.key),
        value_b64=_b64(record.value),
        headers=[Header(name=name, value_b64=_b64(value)) for name, value in (record.headers or ())],
        timestamp_ms=record.timestamp,
    )
