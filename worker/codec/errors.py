"""Why an input message could not be used; becomes the `error_class` and `reason` of a DLQ record."""

from __future__ import annotations

from enum import StrEnum


class ErrorClass(StrEnum):
    SIZE = "size"  # larger than the configured limit
    ENCODING = "encoding"  # not UTF-8 / not the expected wire framing
    JSON = "json"  # not a JSON object
    SCHEMA = "schema"  # a field is missing, of the wrong type, or out of its range
    SYMBOL = "symbol"  # symbol not in the configured list
    UNKNOWN_SCHEMA = "unknown_schema"  # Avro schema id the registry does not know
    INTERNAL = "internal"  # the worker failed on this message (a bug): kept, with the error, for redrive
    CONFIG = "config"  # valid, but this worker is not configured to act on it (redrive once it is)
    MISROUTED = "misrouted"  # on a partition its symbol does not map to: another partition owns it


class DecodeError(Exception):
    """A message that the worker cannot turn into a command. Never retried: it goes to the DLQ."""

    def __init__(self, error_class: ErrorClass, reason: str) -> None:
        super().__init__(f"{error_class}: {reason}")
        self.error_class = error_class
        self.reason = reason
