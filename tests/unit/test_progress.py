"""Long runs feel alive: a progress bar on a terminal, nothing when not on one; a replay stopped
with Ctrl-C says how far it got and leaves a consistent (partial) outbox."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import sys
from pathlib import Path

import orjson

from examples.gen_decisions import decisions
from worker.contract.events import ExecEvent
from worker.core.backtest import BacktestExecutor
from worker.core.engine import ExecutionEngine
from worker.io.outbox import Outbox
from worker.policy.rng import Rng
from worker.runtime.replay import PROGRESS_EVERY, replay

ROOT = Path(__file__).resolve().parents[2]


def write_sample(path: Path, count: int, seed: int) -> Path:
    path.write_bytes(b"\n".join(orjson.dumps(d) for d in decisions(count, seed=seed)) + b"\n")
    return path


async def test_the_progress_hook_reports_and_changes_nothing() -> None:
    values = [orjson.dumps(d) for d in decisions(2_500, seed=91)]
    calls: list[tuple[int, int]] = []
    with_hook = await replay(
        ExecutionEngine(BacktestExecutor(Rng(0))), values, progress=lambda d, t: calls.append((d, t))
    )
    without = await replay(ExecutionEngine(BacktestExecutor(Rng(0))), values)
    assert with_hook.digest == without.digest
    assert calls == [(0, 2_500), *((n, 2_500) for n in range(PROGRESS_EVERY, 2_500, PROGRESS_EVERY)), (2_500, 2_500)]


def read_until(fd: int, needle: bytes, timeout_s: float) -> bytes:
    """Reads a pty until `needle` shows up (or EOF / timeout); returns what was read."""
    seen = b""
    while needle not in seen:
        ready, _, _ = select.select([fd], [], [], timeout_s)
        if not ready:
            break
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        seen += chunk
    return seen


def test_replay_on_a_terminal_shows_progress_and_ctrl_c_says_how_far_it_got(tmp_path: Path) -> None:
    sample = write_sample(tmp_path / "decisions.jsonl", 30_000, seed=92)
    out = tmp_path / "out"
    master, slave = pty.openpty()
    child = subprocess.Popen(
        [sys.executable, "-m", "worker", "replay", "--from-file", str(sample), "--out", str(out)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=slave,
        env={**os.environ, "COLUMNS": "120"},
    )
    os.close(slave)
    try:
        shown = read_until(master, b"000/30000", timeout_s=120)  # the bar has moved past 0
        assert b"000/30000" in shown, shown[-500:]
        child.send_signal(signal.SIGINT)
        shown += read_until(master, b"outputs are partial", timeout_s=120)
        child.wait(timeout=120)
    finally:
        child.kill()
        os.close(master)
    assert child.returncode == 130
    text = shown.decode(errors="replace")
    assert "replay interrupted after" in text and "of 30000 decisions" in text
    # The partial outbox is consistent: complete files, no duplicates, nothing left open, and the
    # run's metadata says where it stopped.
    run = json.loads((out / "run.json").read_text())
    assert run["interrupted_after_decisions"] < 30_000 and run["digest"] is None
    lines = list(Outbox(out).iter_lines())
    ids = [ExecEvent.model_validate_json(line).event_id for line in lines]
    assert len(ids) == len(set(ids)) and Outbox(out).open_files() == []


def test_replay_off_a_terminal_draws_no_progress(tmp_path: Path) -> None:
    sample = write_sample(tmp_path / "decisions.jsonl", 1_500, seed=93)
    result = subprocess.run(
        [sys.executable, "-m", "worker", "replay", "--from-file", str(sample)],
        cwd=ROOT,
        capture_output=True,
        timeout=120,
    )
    assert result.returncode == 0 and result.stderr == b""
