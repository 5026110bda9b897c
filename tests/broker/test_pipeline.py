"""The whole path against the real broker: decisions in, one exec-event each, outbox mirror,
bad input in the DLQ, offsets committed with the events."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import uuid
from collections import Counter
from pathlib import Path

import orjson

from examples.gen_decisions import decisions
from tests.bad_corpus import BAD_DECISIONS
from tests.broker.helpers import TestTopics, committed_offsets, drain, end_offsets, produce, read_records
from worker.core.dlq import DLQ_VALUE_KEEP_BYTES
from worker.io.kafka import KafkaConfig
from worker.io.outbox import Outbox
from worker.runtime.summary import RunSummary


async def run_until_drained(
    kafka: KafkaConfig, topics: TestTopics, group: str, outbox: Path, max_batch: int = 200
) -> RunSummary:
    return await drain(kafka, topics, outbox, group, max_batch=max_batch)


def sample(count: int, seed: int) -> list[bytes]:
    return [orjson.dumps(d) for d in decisions(count, seed)]


async def test_every_decision_gets_one_event_and_bad_input_lands_in_the_dlq(
    kafka: KafkaConfig, topics: TestTopics, tmp_path: Path
) -> None:
    good = sample(400, seed=11)
    # Interleave the bad corpus through the good input (every 8th message is bad).
    messages: list[tuple[bytes | None, bytes | None]] = []
    bad_iter = iter(BAD_DECISIONS)
    for index, value in enumerate(good):
        messages.append((orjson.loads(value)["symbol"].encode(), value))
        if index % 8 == 0 and (bad := next(bad_iter, None)) is not None:
            messages.append((b"BADKEY", bad[1]))
    assert next(bad_iter, None) is None, "corpus larger than the interleaving"
    await produce(kafka, topics.name("decisions"), messages)  # type: ignore[arg-type]

    group = f"g-{uuid.uuid4().hex[:8]}"
    summary = await run_until_drained(kafka, topics, group, tmp_path / "outbox")

    events = await read_records(kafka, topics.name("exec_events"))
    parsed = [(partition, orjson.loads(value)) for partition, _, value in events]
    by_row = Counter(event["signal_row_id"] for _, event in parsed)
    expected_rows = {orjson.loads(v)["signal_row_id"] for v in good}
    assert set(by_row) == expected_rows
    assert set(by_row.values()) == {1}
    # Co-partitioning: each event sits in the partition number of its input message.
    assert all(partition == event["source"]["partition"] for partition, event in parsed)
    assert summary.events == len(good) and summary.consumed == len(messages)

    dlq = [orjson.loads(value) for _, _, value in await read_records(kafka, topics.name("dlq"))]
    assert len(dlq) == len(BAD_DECISIONS)
    # Kept whole, or (over 64 KiB) its first 64 KiB with the whole value's size and sha256.
    originals = Counter(
        (
            r.get("value_sha256") or base64.b64decode(r["value_b64"]) if r["value_b64"] is not None else None,
            r["error_class"],
        )
        for r in dlq
    )
    assert originals == Counter(
        (hashlib.sha256(raw).hexdigest() if raw is not None and len(raw) > DLQ_VALUE_KEEP_BYTES else raw, cls)
        for _, raw, cls in BAD_DECISIONS
    )
    assert all(r["reason"] and r["source"]["topic"] == topics.name("decisions") for r in dlq)

    # The outbox holds exactly the committed events, line for line.
    outbox = Outbox(tmp_path / "outbox")
    assert Counter(outbox.iter_lines()) == Counter(value for _, _, value in events)
    assert outbox.leftover_parts() == []

    # Offsets were committed in the same transactions: nothing is left to consume.
    committed = await committed_offsets(kafka, group, topics.name("decisions"))
    ends = await end_offsets(kafka, topics.name("decisions"))
    assert all((committed[p] or 0) >= ends[p] - 1 and (committed[p] or 0) > 0 for p in ends if ends[p] > 0)


async def test_redelivered_input_creates_no_second_order(
    kafka: KafkaConfig, topics: TestTopics, tmp_path: Path
) -> None:
    good = sample(150, seed=12)
    keyed = [(orjson.loads(v)["symbol"].encode(), v) for v in good]
    await produce(kafka, topics.name("decisions"), keyed)
    group = f"g-{uuid.uuid4().hex[:8]}"
    first = await run_until_drained(kafka, topics, group, tmp_path / "outbox")
    # Upstream publishes the same decisions again (a retry storm); a fresh process must rebuild
    # its state from exec-events and recognise every one of them.
    await produce(kafka, topics.name("decisions"), keyed)
    second = await run_until_drained(kafka, topics, group, tmp_path / "outbox")

    assert first.events == len(good)
    assert second.events == 0 and second.dropped["duplicate"] == len(good)
    events = await read_records(kafka, topics.name("exec_events"))
    assert len(events) == len(good)
    assert Counter(Outbox(tmp_path / "outbox").iter_lines()) == Counter(v for _, _, v in events)


async def test_a_lost_outbox_is_rebuilt_from_the_topic(kafka: KafkaConfig, topics: TestTopics, tmp_path: Path) -> None:
    good = sample(120, seed=13)
    await produce(kafka, topics.name("decisions"), [(orjson.loads(v)["symbol"].encode(), v) for v in good])
    group = f"g-{uuid.uuid4().hex[:8]}"
    await run_until_drained(kafka, topics, group, tmp_path / "first")
    # A new host (empty outbox directory) takes over the same group: it mirrors the history.
    await run_until_drained(kafka, topics, group, tmp_path / "second")
    events = await read_records(kafka, topics.name("exec_events"))
    assert Counter(Outbox(tmp_path / "second").iter_lines()) == Counter(v for _, _, v in events)


async def test_commit_interval_gathers_fewer_larger_transactions(
    kafka: KafkaConfig, topics: TestTopics, tmp_path: Path
) -> None:
    good = sample(300, seed=14)
    await produce(kafka, topics.name("decisions"), [(orjson.loads(v)["symbol"].encode(), v) for v in good])
    summary = await drain(kafka, topics, tmp_path / "outbox", max_batch=1_000, commit_interval_ms=500)
    assert summary.events == len(good)
    # All input was there before the start: gathered for 500 ms, it fits one batch, so one
    # transaction per partition that has data.
    partitions_with_data = {p for p, _, _ in await read_records(kafka, topics.name("decisions"))}
    assert summary.transactions == len(partitions_with_data)


async def test_an_internal_error_on_one_message_dead_letters_it_and_the_worker_goes_on(
    kafka: KafkaConfig, topics: TestTopics, tmp_path: Path
) -> None:
    from tests.broker.helpers import make_worker

    good = sample(60, seed=15)
    await produce(kafka, topics.name("decisions"), [(orjson.loads(v)["symbol"].encode(), v) for v in good])
    worker = make_worker(kafka, topics, tmp_path / "outbox")
    poisoned = orjson.loads(good[7])["signal_row_id"]
    real_prepare = worker.engine.prepare

    def prepare(book, decision, source):  # type: ignore[no-untyped-def]
        if decision.signal_row_id == poisoned:
            raise ArithmeticError("simulated bug")
        return real_prepare(book, decision, source)

    worker.engine.prepare = prepare  # type: ignore[method-assign]
    summary = await asyncio.wait_for(worker.run(), timeout=120)
    assert summary.events == len(good) - 1
    (dead,) = [orjson.loads(v) for _, _, v in await read_records(kafka, topics.name("dlq"))]
    assert dead["error_class"] == "internal" and "simulated bug" in dead["reason"]
    assert orjson.loads(base64.b64decode(dead["value_b64"]))["signal_row_id"] == poisoned


async def test_metrics_endpoint_serves_the_named_metrics_on_loopback(
    kafka: KafkaConfig, topics: TestTopics, tmp_path: Path
) -> None:
    import socket
    import urllib.request

    from tests.broker.helpers import make_worker

    good = sample(80, seed=16)
    await produce(kafka, topics.name("decisions"), [(orjson.loads(v)["symbol"].encode(), v) for v in good])
    worker = make_worker(kafka, topics, tmp_path / "outbox")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    worker.metrics.serve(port)
    await asyncio.wait_for(worker.run(), timeout=120)
    body = await asyncio.to_thread(lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode())
    for name in (
        "executor_submit_total",
        "executor_pre_deny_total",
        "executor_throttle_total",
        "executor_latency_ms_bucket",
        "executor_exec_events_total",
        "executor_batches_total",
    ):
        assert name in body, name
    assert 'executor_batches_total{outcome="committed"}' in body
    assert worker.summary.events == len(good)
    # The counters agree with what the run did.
    counted = sum(
        float(line.rsplit(" ", 1)[1]) for line in body.splitlines() if line.startswith("executor_exec_events_total{")
    )
    assert counted == len(good)
