"""Differential tests: the rebuild's record-batch reader (rust/execcore/src/record_batch.rs)
against aiokafka's own read_committed reader (`PartitionRecords`), on the same bytes.

Generated partition logs (v2 batches as brokers store them): plain and idempotent batches,
transactions committed and aborted (interleaved, as several producers write them), the brokers'
control batches, offset gaps (compaction), tombstones, gzip batches, a Fetch response cut in the
middle of a batch, and fetch offsets inside a batch. The reader must yield exactly aiokafka's
records and next offset, or stop at a batch it does not handle (a compressed one), having yielded
exactly aiokafka's records before it.
"""

from __future__ import annotations

import random
import struct

import execcore
import pytest
from aiokafka import TopicPartition
from aiokafka.consumer.fetcher import READ_COMMITTED, PartitionRecords
from aiokafka.record.default_records import _DefaultRecordBatchBuilderPy
from aiokafka.record.memory_records import MemoryRecords
from aiokafka.record.util import calc_crc32c

pytestmark = pytest.mark.unit

GZIP = 1
CONTROL = 0x20


def batch(
    base: int,
    values: list[bytes | None],
    producer_id: int = -1,
    transactional: bool = False,
    compression: int = 0,
    gaps: list[int] | None = None,
    control: int | None = None,
) -> bytes:
    """One v2 batch at `base` (`gaps`: offset deltas of the records; `control`: a marker batch,
    0 = abort, 1 = commit)."""
    builder = _DefaultRecordBatchBuilderPy(
        2, compression, transactional, producer_id, 0 if producer_id >= 0 else -1, 0, 1 << 20
    )
    deltas = gaps or list(range(len(values)))
    if control is not None:
        builder.append(0, 1_000, struct.pack(">hh", 0, control), b"\x00\x00\x00\x00\x00\x00", [])
    else:
        for delta, value in zip(deltas, values, strict=True):
            builder.append(delta, 1_000 + delta, b"k", value, [])
    data = bytearray(builder.build())
    struct.pack_into(">q", data, 0, base)
    if control is not None:
        attributes = struct.unpack_from(">h", data, 21)[0] | CONTROL
        struct.pack_into(">h", data, 21, attributes)
        struct.pack_into(">I", data, 17, calc_crc32c(bytes(data[21:])))
    return bytes(data)


def partition_log(seed: int) -> tuple[list[tuple[int, int, bytes]], list[tuple[int, int]]]:
    """A generated log: its batches (base offset, next offset, bytes) and the aborted
    transactions (producer_id, first_offset)."""
    rng = random.Random(seed)
    offset = rng.randrange(0, 1_000)
    out: list[tuple[int, int, bytes]] = []
    aborted: list[tuple[int, int]] = []
    open_txns: dict[int, int] = {}  # producer -> first offset
    for _ in range(rng.randrange(5, 25)):
        kind = rng.random()
        pid = rng.choice([7, 8, 9])
        count = rng.randrange(1, 6)
        values: list[bytes | None] = [
            None if rng.random() < 0.1 else f"v{offset + i}-{rng.getrandbits(20)}".encode() for i in range(count)
        ]
        base = offset
        if kind < 0.3:  # a plain (non-transactional) batch, idempotent or not, compressed sometimes
            gaps = sorted(rng.sample(range(count * 3), count)) if rng.random() < 0.3 else None
            producer = rng.choice([-1, 42])
            offset += (gaps[-1] if gaps else count - 1) + 1
            gzip = rng.random() < 0.15
            if gzip:  # compressible, or aiokafka's builder sends the batch uncompressed
                values = [v if v is None else v * 50 for v in values]
            out.append((base, offset, batch(base, values, producer, gaps=gaps, compression=GZIP if gzip else 0)))
        elif kind < 0.75 or pid not in open_txns:  # a transaction's data
            open_txns.setdefault(pid, offset)
            offset += count
            out.append((base, offset, batch(base, values, pid, transactional=True)))
        else:  # the transaction's end: a control batch
            abort = rng.random() < 0.5
            if abort:
                aborted.append((pid, open_txns[pid]))
            del open_txns[pid]
            offset += 1
            out.append((base, offset, batch(base, [], pid, transactional=True, control=0 if abort else 1)))
    return out, aborted


def aiokafka_reads(
    data: bytes, fetch_offset: int, aborted: list[tuple[int, int]]
) -> tuple[list[tuple[int, bytes | None]], int]:
    records = PartitionRecords(
        TopicPartition("t", 0), MemoryRecords(data), list(aborted), fetch_offset, None, None, True, READ_COMMITTED
    )
    out = [(r.offset, r.value) for r in records]
    return out, records.next_fetch_offset


@pytest.mark.parametrize("seed", range(300))
def test_the_reader_reads_what_aiokafka_reads(seed: int) -> None:
    batches, aborted = partition_log(seed)
    rng = random.Random(seed)
    # A response starts at the batch holding the fetch offset, and may end inside a batch.
    first = rng.randrange(0, min(3, len(batches)))
    base, end, _ = batches[first]
    fetch_offset = rng.randrange(base, end)
    data = b"".join(b for _, _, b in batches[first:])
    cut = len(data) if rng.random() < 0.6 else rng.randrange(0, len(data))
    chunk = data[:cut]
    expected, expected_next = aiokafka_reads(chunk, fetch_offset, aborted)
    next_offset, unhandled, records = execcore.read_record_batches(chunk, fetch_offset, aborted)
    if unhandled:  # a compressed batch: aiokafka reads on from there
        assert records == [r for r in expected if r[0] < next_offset]
        assert all(r[0] >= next_offset for r in expected[len(records) :])
        assert next_offset <= expected_next
    else:
        assert (records, next_offset) == (expected, expected_next)


def test_the_generated_logs_hold_what_the_reader_must_get_right() -> None:
    logs = [(b"".join(b for _, _, b in batches), aborted) for batches, aborted in map(partition_log, range(300))]
    with_aborts = sum(bool(aborted) for _, aborted in logs)
    dropped = sum(len(aiokafka_reads(d, 0, [])[0]) > len(aiokafka_reads(d, 0, a)[0]) for d, a in logs)
    compressed = sum(execcore.read_record_batches(d, 0, a)[1] for d, a in logs)
    assert with_aborts > 100 and dropped > 100 and compressed > 20


def test_a_bad_crc_stops_the_reader_where_aiokafka_refuses() -> None:
    data = bytearray(batch(5, [b"a", b"b"]) + batch(7, [b"c"]))
    data[-1] ^= 0xFF  # the second batch's last byte
    next_offset, unhandled, records = execcore.read_record_batches(bytes(data), 5, [])
    assert (next_offset, unhandled, records) == (7, True, [(5, b"a"), (6, b"b")])
    with pytest.raises(Exception, match="CRC"):
        aiokafka_reads(bytes(data), 5, [])


def test_an_aborted_transaction_started_before_the_fetch_offset_is_dropped() -> None:
    """The response names it (its first offset is below the fetch offset): its later batches go."""
    data = (
        batch(10, [b"x1"], 7, transactional=True) + batch(11, [b"ok"], 42) + batch(12, [b"x2"], 7, transactional=True)
    )
    data += batch(13, [], 7, transactional=True, control=0) + batch(14, [b"after"], 7, transactional=True)
    expected, expected_next = aiokafka_reads(data[len(batch(10, [b"x1"], 7, transactional=True)) :], 11, [(7, 10)])
    assert expected == [(11, b"ok"), (14, b"after")] and expected_next == 15
    tail = data[len(batch(10, [b"x1"], 7, transactional=True)) :]
    assert execcore.read_record_batches(tail, 11, [(7, 10)]) == (15, False, expected)
