"""`execworker run` configured only by a --config file and EXECWORKER_* env vars (no run flags)."""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import yaml

from tests.broker.helpers import ROOT, TestTopics, cli
from tests.broker.test_process import assert_exactly_once, produce_sample
from worker.io.kafka import KafkaConfig


async def test_run_from_a_config_file_and_env(kafka: KafkaConfig, topics: TestTopics, tmp_path: Path) -> None:
    values = await produce_sample(kafka, topics, 200, seed=31)
    outbox = tmp_path / "outbox"
    config = tmp_path / "worker.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "topics": str(topics.path),
                "group": f"g-{uuid.uuid4().hex[:8]}",
                "outbox": str(outbox),
                "metrics_port": 0,
                "max_batch": 7,  # overridden by the env below
            }
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXECWORKER_")}
    env.update(
        EXECWORKER_CONFIG=str(config),
        EXECWORKER_UNTIL_DRAINED="true",
        EXECWORKER_MAX_BATCH="50",
        EXECWORKER_BOOTSTRAP_SERVERS=kafka.bootstrap_servers,
    )
    shown = subprocess.run(cli("config", "show"), cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert yaml.safe_load(shown.stdout)["run"]["max_batch"] == 50
    result = subprocess.run(cli("run"), cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "exec-events" in result.stdout
    await assert_exactly_once(kafka, topics, values, outbox)
