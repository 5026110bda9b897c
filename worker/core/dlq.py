"""Building a DLQ record from a message the worker could not use."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from typing import Protocol

from worker.codec.errors import DecodeError
from worker.contract.events import DlqRecord, Header
from worker.contract.orders import SourceRef


class InputRecord(Protocol):
    """What the core reads of an input record (a Kafka `ConsumerRecord`, a replayed line)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def timestamp(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def headers(self) -> Sequence[tuple[str, bytes]]: ...


# The first 64 KiB of a value are kept (88 KiB as base64): enough to see what it was, and a DLQ
# record stays far below any broker's message limit (topics.yaml gives the DLQ 1 MiB). A larger
# value made the record too large for the broker: the transaction aborted, and the same record
# was retried forever, stopping every decision behind it on that partition.
DLQ_VALUE_KEEP_BYTES = 64 * 1024
# Keys and headers are small by nature; past this they are cut too, for the same reason.
DLQ_KEY_KEEP_BYTES = 4 * 1024


def _b64(raw: bytes | None) -> str | None:
    return None if raw is None else base64.b64encode(raw).decode("ascii")


def dlq_record(record: InputRecord, error: DecodeError) -> DlqRecord:
    value = record.value
    cut = value is not None and len(value) > DLQ_VALUE_KEEP_BYTES
    return DlqRecord(
        source=SourceRef(topic=record.topic, partition=record.partition, offset=record.offset),
        error_class=error.error_class.value,
        reason=error.reason,
        key_b64=_b64(record.key[:DLQ_KEY_KEEP_BYTES] if record.key is not None else None),
        value_b64=_b64(value[:DLQ_VALUE_KEEP_BYTES] if value is not None else None),
        headers=[
            Header(name=name, value_b64=_b64(raw[:DLQ_KEY_KEEP_BYTES] if raw is not None else None))
            for name, raw in (record.headers or ())
        ],
        timestamp_ms=record.timestamp,
        value_size=len(value) if cut and value is not None else None,
        value_sha256=hashlib.sha256(value).hexdigest() if cut and value is not None else None,
    )
