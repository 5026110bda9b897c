"""`ops/kafka` on its own port and state directory: up twice, status, down, status."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from bench.chaos import free_port_pair
from tests.broker.helpers import ROOT

OPS = str(ROOT / "ops" / "kafka")


def test_up_twice_status_down(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "EXECWORKER_KAFKA_PORT": str(free_port_pair()),
        "EXECWORKER_KAFKA_HOME": str(tmp_path),
    }
    env.pop("KAFKA_BOOTSTRAP_SERVERS", None)

    def ops(verb: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([OPS, verb], env=env, capture_output=True, text=True, timeout=180)

    try:
        first = ops("up")
        assert first.returncode == 0, first.stderr
        address = f"127.0.0.1:{env['EXECWORKER_KAFKA_PORT']}"
        assert first.stdout.strip().endswith(address)
        pid = (tmp_path / "kafka.pid").read_text().strip()

        second = ops("up")
        assert second.returncode == 0 and "already running" in second.stdout
        assert (tmp_path / "kafka.pid").read_text().strip() == pid  # no second broker

        status = ops("status")
        assert status.returncode == 0 and f"up at {address}" in status.stdout
    finally:
        down = ops("down")
    assert down.returncode == 0 and "stopped" in down.stdout
    assert not Path(f"/proc/{pid}").exists()
    after = ops("status")
    assert after.returncode == 3 and "down" in after.stdout
    assert ops("down").returncode == 0  # down twice is fine too
