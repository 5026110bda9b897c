"""Wire formats per topic: JSON (one object per message) or Avro in the Confluent framing
(magic byte 0, 4-byte big-endian schema id, Avro binary body)."""

from __future__ import annotations

import io
import struct
from typing import Any, Protocol, TypeVar

import fastavro
import orjson
from pydantic import BaseModel

from worker.codec.errors import DecodeError, ErrorClass
from worker.codec.json_codec import DEFAULT_MAX_MESSAGE_BYTES, decode_json, encode_json
from worker.codec.registry import SchemaRegistry

ModelT = TypeVar("ModelT", bound=BaseModel)
_MAGIC = 0
_HEADER = struct.Struct(">bI")


class WireCodec(Protocol):
    def decode(self, model: type[ModelT], value: bytes | None) -> ModelT: ...

    def encode(self, message: BaseModel) -> bytes: ...


class JsonWire:
    def __init__(self, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> None:
        self.max_bytes = max_bytes

    def decode(self, model: type[ModelT], value: bytes | None) -> ModelT:
        return decode_json(model, value, self.max_bytes)

    def encode(self, message: BaseModel) -> bytes:
        return encode_json(message)


class AvroWire:
    """Avro for one contract; decodes any registered version of it, writes the newest."""

    def __init__(self, registry: SchemaRegistry, contract: str, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> None:
        self.registry = registry
        self.contract = contract
        self.max_bytes = max_bytes
        self._write_id = registry.latest_id(contract)
        self._write_schema = registry.writer_schema(self._write_id)
        self._reader_schema = self._write_schema

    def decode(self, model: type[ModelT], value: bytes | None) -> ModelT:
        # One validation path for every format: the same strict rules as JSON input.
        return decode_json(model, self.json_of(value), self.max_bytes)

    def json_of(self, value: bytes | None) -> bytes:
        """The record as the JSON object `decode` validates (the compiled rebuild folds it)."""
        if value is None:
            raise DecodeError(ErrorClass.JSON, "empty message (null value / tombstone)")
        if len(value) > self.max_bytes:
            raise DecodeError(ErrorClass.SIZE, f"message is {len(value)} bytes; the limit is {self.max_bytes}")
        return orjson.dumps(self._read(value, self._reader_schema))

    def to_json(self, value: bytes) -> bytes:
        """The record as one JSON object (for tools that print a topic), with no model check."""
        return orjson.dumps(self._read(value, None))

    def _read(self, value: bytes, reader_schema: Any) -> Any:
        """The record of a Confluent-framed value, read with its writer's schema."""
        if len(value) < _HEADER.size or value[0] != _MAGIC:
            raise DecodeError(ErrorClass.ENCODING, "not Avro in the Confluent framing (magic byte 0 + schema id)")
        _, schema_id = _HEADER.unpack_from(value)
        try:
            writer = self.registry.writer_schema(schema_id)
        except KeyError:
            raise DecodeError(ErrorClass.UNKNOWN_SCHEMA, f"schema id {schema_id} is not registered") from None
        try:
            return fastavro.schemaless_reader(io.BytesIO(value[_HEADER.size :]), writer, reader_schema)
        except Exception as exc:  # fastavro raises many types for corrupt input
            raise DecodeError(ErrorClass.ENCODING, f"Avro body does not match schema {schema_id}: {exc}") from None

    def encode(self, message: BaseModel) -> bytes:
        buffer = io.BytesIO()
        buffer.write(_HEADER.pack(_MAGIC, self._write_id))
        fastavro.schemaless_writer(buffer, self._write_schema, message.model_dump(mode="json"))
        return buffer.getvalue()
