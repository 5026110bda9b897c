"""The takeover rebuild's record-batch reader (worker/io/record_batches.py and
rust/execcore/src/record_batch.rs) against aiokafka's consumer, on a real broker.

A rebuild that read an aborted event would rebuild an order the previous owner never committed
(and the product's one promise, no order sent twice, rests on the rebuilt table). So each
partition here holds committed and aborted transactions, interleaved, control batches, plain
idempotent batches, a transaction still open while the rebuild runs, tombstones, a value only the
model can read, and compressed batches (which the reader hands to the consumer): the rebuild
through the batch reader must end exactly where the rebuild through aiokafka's consumer and the
pydantic fold end (table, policy, counts, re-published lines).
"""

from __future__ import annotations

import logging
import random
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import NewTopic

from tests.unit.test_history_fold import event_dict, generated_stream, snapshot
from worker.codec.wire import JsonWire
from worker.contract.enums import OrderStatus
from worker.io.kafka import KafkaConfig
from worker.io.outbox import Outbox
from worker.policy.pretrade import PreTradePolicy
from worker.runtime.recovery import HistoryUnreadable, rebuild_partitions

PARTITIONS = 3
READERS = (("compiled", "batches"), ("compiled", "consumer"), ("reference", "consumer"))


@pytest.fixture
async def topic(kafka: KafkaConfig) -> AsyncIterator[str]:
    name = f"rebuild-batches-{uuid.uuid4().hex[:8]}"
    async with kafka.admin_session() as admin:
        await admin.create_topics([NewTopic(name, PARTITIONS, 1)])
    yield name
    async with kafka.admin_session() as admin:
        await admin.delete_topics([name])


def poison(count: int, tag: str) -> list[bytes]:
    """Exec-events of orders that must never be rebuilt (written in aborted transactions)."""
    rng = random.Random(tag)
    return [orjson.dumps(event_dict(rng, f"aborted-{tag}-{i}", OrderStatus.SUBMITTED, i, 1)) for i in range(count)]


async def send_all(producer: AIOKafkaProducer, topic: str, partition: int, values: list[bytes | None]) -> None:
    for value in values:
        await producer.send(topic, value=value, key=b"k", partition=partition)
    await producer.flush()


async def transactional(kafka: KafkaConfig, **options: Any) -> AIOKafkaProducer:
    producer = kafka.producer(transactional_id=f"t-{uuid.uuid4().hex[:8]}", enable_idempotence=True, **options)
    await producer.start()
    return producer


async def rebuild_all(kafka: KafkaConfig, topic: str, tmp_path: Path, mark: int) -> dict[str, Any]:
    """The rebuild through each reader, on a fresh outbox each (marks at `mark`)."""
    outcomes = {}
    for fold, reader in READERS:
        outbox = Outbox(tmp_path / f"outbox-{fold}-{reader}-{uuid.uuid4().hex[:6]}")
        for p in range(PARTITIONS):
            outbox.set_mark(topic, p, mark)
        rebuilt = await rebuild_partitions(
            kafka,
            topic,
            JsonWire(),
            list(range(PARTITIONS)),
            outbox,
            PreTradePolicy.default(),
            fold=fold,  # type: ignore[arg-type]
            reader=reader,  # type: ignore[arg-type]
        )
        outbox.drain_all()
        files = [path for path in sorted(outbox.ready.rglob("*")) if path.is_file()]
        lines = sorted(line for path in files for line in path.read_bytes().splitlines())
        outcomes[f"{fold}/{reader}"] = (
            {
                p: (
                    r.events_read,
                    r.republished,
                    r.source_high,
                    sorted(
                        (coid, rec.status, rec.events, rec.expires_ms, rec.attempt, rec.last)
                        for coid, rec in r.table.records().items()
                    ),
                    snapshot(r.policy),
                )
                for p, r in rebuilt.items()
            },
            lines,
        )
    return outcomes


def assert_alike(outcomes: dict[str, Any]) -> Any:
    first = next(iter(outcomes.values()))
    for name, outcome in outcomes.items():
        assert outcome == first, name
    return first


def handed_to_consumer(caplog: pytest.LogCaptureFixture) -> set[str]:
    """The partitions the batch reader handed to the consumer (from its log lines)."""
    return {
        r.getMessage().split(" read through")[0]
        for r in caplog.records
        if "read through the consumer" in r.getMessage()
    }


async def test_transactions_aborted_open_and_committed_are_read_as_the_consumer_reads_them(
    kafka: KafkaConfig, topic: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    committed = generated_stream(21, 360)  # tombstones included
    plain = kafka.producer(acks="all", enable_idempotence=True, linger_ms=5)
    await plain.start()
    first, second, third = await transactional(kafka), await transactional(kafka), await transactional(kafka)
    try:
        for p in range(PARTITIONS):
            chunk = committed[p * 120 : (p + 1) * 120]
            await send_all(plain, topic, p, chunk[:30])
            await first.begin_transaction()
            await send_all(first, topic, p, chunk[30:60])
            await first.commit_transaction()
            await second.begin_transaction()
            await send_all(second, topic, p, poison(15, f"x{p}"))
            await second.abort_transaction()
            # Interleaved: an aborted transaction's batches between a committed one's.
            await second.begin_transaction()
            await first.begin_transaction()
            for i in range(60, 90, 5):
                await send_all(first, topic, p, chunk[i : i + 5])
                await send_all(second, topic, p, poison(3, f"y{p}-{i}"))
            await first.commit_transaction()
            await second.abort_transaction()
            await send_all(plain, topic, p, chunk[90:120])
        # Still open while the rebuild runs: its records are above the last stable offset.
        await third.begin_transaction()
        await send_all(third, topic, 0, poison(10, "open"))
        await send_all(plain, topic, 1, poison(5, "readable"))  # on another partition: readable
        with caplog.at_level(logging.INFO, logger="worker.runtime.recovery"):
            outcomes = await rebuild_all(kafka, topic, tmp_path, mark=40)
        await third.abort_transaction()
    finally:
        for producer in (plain, first, second, third):
            await producer.stop()
    tables, lines = assert_alike(outcomes)
    assert not handed_to_consumer(caplog)  # every partition was read by the batch reader
    ids = {coid for p in tables for coid, *_ in tables[p][3]}
    assert not any(coid.startswith(("aborted-x", "aborted-y", "aborted-open")) for coid in ids)
    assert any(coid.startswith("aborted-readable") for coid in ids)
    assert sum(t[0] for t in tables.values()) == sum(v is not None for v in committed) + 5
    assert lines and not any(b"aborted-x" in line or b"aborted-open" in line for line in lines)


async def test_compressed_batches_are_read_through_the_consumer(
    kafka: KafkaConfig, topic: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    values = generated_stream(22, 300)
    plain = kafka.producer(acks="all", enable_idempotence=True, linger_ms=5)
    gzip = kafka.producer(acks="all", enable_idempotence=True, linger_ms=5, compression_type="gzip")
    aborting = await transactional(kafka, compression_type="gzip")
    await plain.start()
    await gzip.start()
    try:
        await send_all(gzip, topic, 0, values[:100])  # compressed from the start
        await send_all(plain, topic, 1, values[100:150])  # compressed from the middle on
        await aborting.begin_transaction()
        await send_all(aborting, topic, 1, poison(10, "gz"))
        await aborting.abort_transaction()
        await send_all(gzip, topic, 1, values[150:200])
        await send_all(plain, topic, 1, values[200:250])
        await send_all(plain, topic, 2, values[250:])  # never compressed
        with caplog.at_level(logging.INFO, logger="worker.runtime.recovery"):
            outcomes = await rebuild_all(kafka, topic, tmp_path, mark=0)
    finally:
        for producer in (plain, gzip, aborting):
            await producer.stop()
    tables, _ = assert_alike(outcomes)
    handed = handed_to_consumer(caplog)
    assert any(f"'{topic}', partition=0" in h for h in handed) and any(f"'{topic}', partition=1" in h for h in handed)
    assert not any(f"'{topic}', partition=2" in h for h in handed)
    assert sum(t[0] for t in tables.values()) == sum(v is not None for v in values)


async def test_a_value_only_the_model_reads_and_an_unreadable_one(
    kafka: KafkaConfig, topic: str, tmp_path: Path
) -> None:
    rng = random.Random(3)
    lax = orjson.dumps({**event_dict(rng, "ew-lax", OrderStatus.SUBMITTED, 1, 1), "attempt": "2"})
    values: list[bytes | None] = [*generated_stream(23, 40), lax, *generated_stream(24, 40)]
    await send_all_plain(kafka, topic, 0, values)
    tables, _ = assert_alike(await rebuild_all(kafka, topic, tmp_path, mark=0))
    assert any(coid == "ew-lax" for coid, *_ in tables[0][3])
    await send_all_plain(kafka, topic, 0, [b"not an exec-event"])
    for fold, reader in READERS:
        with pytest.raises(HistoryUnreadable, match=rf"\[0\]@{len(values)} is not an exec-event"):
            await rebuild_partitions(
                kafka,
                topic,
                JsonWire(),
                [0],
                Outbox(tmp_path / f"o-{fold}-{reader}"),
                None,
                fold,
                reader,  # type: ignore[arg-type]
            )


async def send_all_plain(kafka: KafkaConfig, topic: str, partition: int, values: list[bytes | None]) -> None:
    producer = kafka.producer(acks="all", enable_idempotence=True, linger_ms=5)
    await producer.start()
    try:
        await send_all(producer, topic, partition, values)
    finally:
        await producer.stop()
