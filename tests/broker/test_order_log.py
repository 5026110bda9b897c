"""`execworker run --log-format json`: every failed order of a run is in the log, traceable by its
client order id and input coordinates; passes are sampled (issue 12, item 4)."""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import orjson

from examples.gen_decisions import decisions
from tests.broker.helpers import ROOT, TestTopics, cli, produce, read_records
from worker.io.kafka import KafkaConfig
from worker.runtime.orderlog import pass_sampled

FAILURES = {"DENIED", "THROTTLED", "REJECTED"}


async def test_every_failure_is_in_the_json_log(kafka: KafkaConfig, topics: TestTopics, tmp_path: Path) -> None:
    values = [orjson.dumps(d) for d in decisions(400, seed=5)]
    await produce(
        kafka,
        topics.name("decisions"),
        [(orjson.loads(v)["symbol"].encode(), v) for v in values] + [(b"BTCUSDT", b"{broken")],
    )
    args = [
        "run",
        "--until-drained",
        "--bootstrap-servers",
        kafka.bootstrap_servers,
        "--topics",
        str(topics.path),
        "--group",
        f"g-{uuid.uuid4().hex[:8]}",
        "--outbox",
        str(tmp_path / "outbox"),
        "--metrics-port",
        "0",
        "--log-sample-pass",
        "0.2",
    ]
    # The format from the environment (EXECWORKER_LOG_FORMAT), as a container would set it.
    done = subprocess.run(
        cli(*args),
        cwd=ROOT,
        capture_output=True,
        timeout=120,
        env={**os.environ, "EXECWORKER_LOG_FORMAT": "json"},
    )
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    lines = [orjson.loads(line) for line in done.stderr.splitlines() if line.startswith(b"{")]
    assert len(lines) == len(done.stderr.splitlines())  # every log line is JSON
    logged = {line["client_order_id"]: line for line in lines if line.get("kind") == "order"}
    events = [orjson.loads(v) for _, _, v in await read_records(kafka, topics.name("exec_events"))]
    failed = {e["client_order_id"]: e for e in events if e["status"] in FAILURES}
    passed = {e["client_order_id"] for e in events if e["status"] not in FAILURES}
    assert failed, "the sample has failures"
    for coid, event in failed.items():
        line = logged[coid]  # every failure traceable ...
        assert (line["topic"], line["partition"], line["offset"]) == (
            event["source"]["topic"],
            event["source"]["partition"],
            event["source"]["offset"],
        )  # ... back to its input message
        assert (line["status"], line["reason"], line["outcome"]) == (event["status"], event["reason"], "failure")
    sampled = {coid for coid, line in logged.items() if line["outcome"] == "pass"}
    assert sampled == {coid for coid in passed if pass_sampled(coid, 0.2)}  # the hash decides, nothing else
    assert [line["error_class"] for line in lines if line.get("kind") == "dead_letter"] == ["json"]
