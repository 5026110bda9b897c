"""The worker as an operator runs it: a separate process, killed, stopped, restarted."""

from __future__ import annotations

import signal
import subprocess
import uuid
from collections import Counter
from pathlib import Path

import orjson

from examples.gen_decisions import decisions
from tests.broker.helpers import (
    ROOT,
    TestTopics,
    cli,
    committed_offsets,
    end_offsets,
    eventually,
    produce,
    read_records,
    spawn_worker,
)
from worker.contract.enums import OrderStatus
from worker.contract.state_machine import is_terminal
from worker.io.kafka import KafkaConfig
from worker.io.outbox import Outbox


async def produce_sample(kafka: KafkaConfig, topics: TestTopics, count: int, seed: int) -> list[bytes]:
    values = [orjson.dumps(d) for d in decisions(count, seed)]
    await produce(kafka, topics.name("decisions"), [(orjson.loads(v)["symbol"].encode(), v) for v in values])
    return values


async def event_count(kafka: KafkaConfig, topics: TestTopics) -> int:
    return len(await read_records(kafka, topics.name("exec_events")))


async def assert_exactly_once(kafka: KafkaConfig, topics: TestTopics, values: list[bytes], outbox: Path) -> None:
    events = await read_records(kafka, topics.name("exec_events"))
    terminal = Counter()
    for _, _, value in events:
        event = orjson.loads(value)
        if is_terminal(OrderStatus(event["status"])):
            terminal[event["signal_row_id"]] += 1
    expected = {orjson.loads(v)["signal_row_id"] for v in values}
    assert set(terminal) == expected, f"{len(expected - set(terminal))} decisions lost"
    assert max(terminal.values()) == 1, "a decision has two terminal events"
    mirror = Outbox(outbox)
    assert Counter(mirror.iter_lines()) == Counter(v for _, _, v in events)


async def test_kill_9_mid_run_loses_and_duplicates_nothing(
    kafka: KafkaConfig, topics: TestTopics, tmp_path: Path
) -> None:
    values = await produce_sample(kafka, topics, 3000, seed=21)
    group, outbox = f"g-{uuid.uuid4().hex[:8]}", tmp_path / "outbox"
    kills = 0
    # Small transactions so that a kill lands mid-stream with work committed before it.
    for threshold in (300, 1200):
        # Killed, never read: its log must not fill a pipe and stop it.
        worker = spawn_worker(topics, kafka, group, outbox, "--max-batch", "25", stderr=subprocess.DEVNULL)
        try:
            await eventually(
                lambda t=threshold: _more_than(kafka, topics, t), timeout_s=180, what=f"{threshold} events"
            )
        finally:
            worker.send_signal(signal.SIGKILL)
            worker.wait(timeout=30)
            kills += 1
        assert worker.returncode == -signal.SIGKILL
    final = spawn_worker(topics, kafka, group, outbox, "--until-drained")
    _, err = final.communicate(timeout=180)
    assert final.returncode == 0, err.decode()[-2000:]
    assert kills == 2
    await assert_exactly_once(kafka, topics, values, outbox)


async def _more_than(kafka: KafkaConfig, topics: TestTopics, threshold: int) -> bool:
    return await event_count(kafka, topics) > threshold


async def test_sigterm_drains_commits_and_exits_cleanly(kafka: KafkaConfig, topics: TestTopics, tmp_path: Path) -> None:
    values = await produce_sample(kafka, topics, 500, seed=22)
    group, outbox = f"g-{uuid.uuid4().hex[:8]}", tmp_path / "outbox"
    worker = spawn_worker(topics, kafka, group, outbox)
    await eventually(lambda: _more_than(kafka, topics, len(values) - 1), timeout_s=90, what="all events")
    worker.send_signal(signal.SIGTERM)
    out, err = worker.communicate(timeout=60)
    assert worker.returncode == 0, err.decode()[-2000:]
    assert b"execworker run summary" in out
    assert b"  rules (enforce | observe | off)\n    mode default: all enforce\n" in out
    await assert_exactly_once(kafka, topics, values, outbox)
    assert Outbox(outbox).leftover_parts() == []
    committed = await committed_offsets(kafka, group, topics.name("decisions"))
    ends = await end_offsets(kafka, topics.name("decisions"))
    assert all((committed[p] or 0) == ends[p] for p in ends)


def test_run_fails_fast_when_no_broker_answers(tmp_path: Path) -> None:
    result = subprocess.run(
        cli(
            "run",
            *("--bootstrap-servers", "127.0.0.1:1", "--broker-wait-s", "0"),
            *("--metrics-port", "0", "--outbox", str(tmp_path)),
        ),
        cwd=ROOT,
        capture_output=True,
        timeout=60,
    )
    assert result.returncode == 3
    assert b"no Kafka broker answers at 127.0.0.1:1" in result.stderr
    assert b"ops/kafka up" in result.stderr


def test_bad_flags_fail_with_a_message_that_says_what_to_fix(tmp_path: Path) -> None:
    result = subprocess.run(
        cli("run", "--executor", "nonsense", "--topics", str(tmp_path / "missing.yaml")),
        cwd=ROOT,
        capture_output=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert b"--executor nonsense" in result.stderr


async def test_topics_apply_is_idempotent_and_reports_drift(kafka: KafkaConfig, topics: TestTopics) -> None:
    def apply(*extra: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            cli(
                "topics",
                "apply",
                "--bootstrap-servers",
                kafka.bootstrap_servers,
                "--topics",
                str(topics.path),
                *extra,
            ),
            cwd=ROOT,
            capture_output=True,
            timeout=60,
        )

    first = apply()
    assert first.returncode == 0
    assert first.stdout.count(b"ok ") == len(topics.file.topics)  # the fixture already created them
    drifted = topics.path.read_text().replace("partitions: 1\n", "partitions: 2\n", 1)
    topics.path.write_text(drifted)
    second = apply("--strict")
    assert second.returncode == 1
    assert b"drift" in second.stdout and b"cluster has 1, topics.yaml says 2" in second.stdout
    # Drift is reported, never repaired.
    assert b"ok " in apply().stdout


def test_run_fails_fast_when_its_topics_do_not_exist(kafka: KafkaConfig, topics: TestTopics, tmp_path: Path) -> None:
    # The test's own (existing) topics, but with an exec-events topic nobody created.
    broken = tmp_path / "broken-topics.yaml"
    broken.write_text(topics.path.read_text().replace(topics.name("exec_events"), "exec-events.never-created"))
    result = subprocess.run(
        cli(
            "run",
            "--bootstrap-servers",
            kafka.bootstrap_servers,
            "--topics",
            str(broken),
            "--metrics-port",
            "0",
            "--outbox",
            str(tmp_path / "outbox"),
        ),
        cwd=ROOT,
        capture_output=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert b"error: missing topics: exec-events.never-created;" in result.stderr
    assert b"execworker topics apply" in result.stderr
