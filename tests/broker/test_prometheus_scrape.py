"""A real Prometheus (Debian's `prometheus`) scrapes a running worker's /metrics with the alert
rules of ops/prometheus/alerts.yml; a dead letter makes `ExecworkerDeadLetters` go pending."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.broker.helpers import TestTopics, produce, spawn_worker
from tests.ops_checks import ALERTS, DASHBOARD, dashboard_exprs, served_names, tool, unserved
from worker.io.kafka import KafkaConfig

WAIT_S = 60  # every wait below is bounded by this


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def until(what: str, check: Any) -> Any:
    """Polls an async check (Prometheus has no push notification for these states)."""
    deadline = asyncio.get_running_loop().time() + WAIT_S
    while True:
        try:
            value = await check()
        except aiohttp.ClientError:
            value = None
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"timed out after {WAIT_S}s waiting for {what}")
        await asyncio.sleep(0.25)


def start_prometheus(binary: str, config: Path, tsdb: Path, port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tsdb}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as client:
        yield client


async def test_prometheus_scrapes_the_worker_and_an_alert_goes_pending(
    kafka: KafkaConfig, topics: TestTopics, tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    prometheus_bin = tool("prometheus", "prometheus")
    metrics_port, prometheus_port = free_port(), free_port()
    worker = spawn_worker(
        topics,
        kafka,
        f"g-{uuid.uuid4().hex[:8]}",
        tmp_path / "outbox",
        "--metrics-port",
        str(metrics_port),
        stderr=subprocess.DEVNULL,
    )
    config = tmp_path / "prometheus.yml"
    config.write_text(
        json.dumps(  # JSON is YAML
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(ALERTS)],
                "scrape_configs": [
                    {"job_name": "execworker", "static_configs": [{"targets": [f"127.0.0.1:{metrics_port}"]}]}
                ],
            }
        )
    )
    prometheus = start_prometheus(prometheus_bin, config, tmp_path / "tsdb", prometheus_port)
    api = f"http://127.0.0.1:{prometheus_port}/api/v1"
    try:

        async def metrics_text() -> str | None:
            async with session.get(f"http://127.0.0.1:{metrics_port}/metrics") as response:
                return await response.text() if response.status == 200 else None

        text = await until("the worker's /metrics", metrics_text)
        # The dashboard's queries name only what this live endpoint serves (or A1 risk_ metrics).
        assert unserved(dashboard_exprs(json.loads(DASHBOARD.read_text())), served_names(text)) == {}

        async def query(expr: str) -> list[dict[str, Any]]:
            async with session.get(f"{api}/query", params={"query": expr}) as response:
                body = await response.json()
            return list(body["data"]["result"]) if body.get("status") == "success" else []

        async def dlq_series_scraped() -> bool:
            return bool(await query('executor_dlq_total{reason="json"}'))

        await until("a scrape of executor_dlq_total", dlq_series_scraped)
        assert (await query('up{job="execworker"}'))[0]["value"][1] == "1"

        async def alert_state(name: str) -> str | None:
            async with session.get(f"{api}/alerts") as response:
                body = await response.json()
            states = [a["state"] for a in body["data"]["alerts"] if a["labels"]["alertname"] == name]
            return states[0] if states else None

        assert await alert_state("ExecworkerDeadLetters") is None
        # Make the condition true: one message that is not JSON goes to the DLQ.
        await produce(kafka, topics.name("decisions"), [(b"BTCUSDT", b"not json")])
        state = await until("ExecworkerDeadLetters to go pending", lambda: alert_state("ExecworkerDeadLetters"))
        assert state == "pending"  # `for: 2m`: pending now, firing only if it lasts
        (series,) = await query('executor_dlq_total{reason="json"}')
        assert series["value"][1] == "1"
    finally:
        stop(prometheus)
        stop(worker)
        errors = prometheus.stderr.read().decode() if prometheus.stderr else ""
    assert prometheus.returncode in (0, -15), errors
