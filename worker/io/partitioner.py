"""Which input partition a symbol belongs to, by the producers' partitioner.

A decision is deduplicated against its own partition's state only; the same decision on two
partitions (an unkeyed producer, explicit partitioning, a redrive without key, added partitions)
would otherwise become two orders. So the worker checks, for every input, that its symbol maps to
the partition it was read from, and dead-letters it as `misrouted` otherwise.

`murmur2` is Kafka's default (Java client, aiokafka, `execworker produce`); `crc32` is
librdkafka's `consistent` partitioner (CRC32 of the key); `off` trusts the producers (only for a
deployment that proves its routing some other way: see docs/operations.md).
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from aiokafka.partitioner import murmur2


class Partitioner(StrEnum):
    MURMUR2 = "murmur2"
    CRC32 = "crc32"
    OFF = "off"


def _murmur2(key: bytes, partitions: int) -> int:
    return (int(murmur2(key)) & 0x7FFFFFFF) % partitions


def _crc32(key: bytes, partitions: int) -> int:
    return zlib.crc32(key) % partitions


_HASHES: dict[Partitioner, Callable[[bytes, int], int]] = {
    Partitioner.MURMUR2: _murmur2,
    Partitioner.CRC32: _crc32,
}


@functools.lru_cache(maxsize=4096)
def partition_for(symbol: str, partitions: int, partitioner: Partitioner = Partitioner.MURMUR2) -> int | None:
    """The partition `symbol` is keyed to, or None when the check is off.

    Cached: it is asked for every input record, for a handful of symbols, and aiokafka's
    murmur2 is pure Python (~2.7% of the worker's event loop in the issue-11 profile)."""
    if partitioner is Partitioner.OFF:
        return None
    return _HASHES[partitioner](symbol.encode(), partitions)


@dataclass(frozen=True)
class InputRouting:
    """The routing check of the core's intake (core/intake.py) for the input topics' partition counts."""

    partitions: Mapping[str, int]  # input topic -> partition count
    partitioner: Partitioner = Partitioner.MURMUR2

    def expected_partition(self, topic: str, symbol: str) -> int | None:
        count = self.partitions.get(topic)
        return None if count is None else partition_for(symbol, count, self.partitioner)

    def describe(self, topic: str) -> str:
        return f"{self.partitions.get(topic)} partitions, {self.partitioner.value} partitioner"
