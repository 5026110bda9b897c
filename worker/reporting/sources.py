"""Where a report's inputs come from: an outbox (a live worker's or a replay's `--out`), the
exec-events topic, a decisions file (regime, instrument grid) and a market file; and the run
metadata a replay leaves beside its outbox (`run.json`)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from worker.codec.errors import DecodeError
from worker.codec.json_codec import decode_json
from worker.contract.events import ExecEvent
from worker.contract.messages import Decision, MarketSnapshot
from worker.io.outbox import Outbox
from worker.runtime.replay import read_input_file

RUN_FILE = "run.json"
# Called with (done, total) while inputs are read; the CLI draws a progress bar with it.
Progress = Callable[[int, int], None]


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return f"sha256:{digest.hexdigest()}"


def read_outbox(root: Path, progress: Progress | None = None) -> list[ExecEvent]:
    """Every event in `ready/` (published files only; open minutes are not read)."""
    files = Outbox(root).ready_files()
    events: list[ExecEvent] = []
    for done, path in enumerate(files, start=1):
        events.extend(ExecEvent.model_validate_json(line) for line in path.read_bytes().splitlines() if line)
        if progress is not None:
            progress(done, len(files))
    return events


def run_metadata(root: Path) -> dict[str, Any]:
    """What a replay recorded about itself (inputs, fill model, seed, config, digest), if any."""
    path = root / RUN_FILE
    if not path.is_file():
        return {}
    loaded: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return loaded


def write_run_metadata(root: Path, metadata: dict[str, Any]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    path = root / RUN_FILE
    part = root / f".{RUN_FILE}.part"
    part.write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    part.replace(path)
    return path


def read_decisions(path: Path) -> dict[str, Decision]:
    """Decisions by signal_row_id (JSONL or Avro container); undecodable lines are skipped."""
    out: dict[str, Decision] = {}
    for value in read_input_file(path):
        try:
            decision = decode_json(Decision, value)
        except DecodeError:
            continue
        out[decision.signal_row_id] = decision
    return out


def read_market(path: Path) -> list[MarketSnapshot]:
    return list(_market_lines(path.read_bytes().splitlines(), str(path)))


def _market_lines(lines: Iterable[bytes], name: str) -> Iterator[MarketSnapshot]:
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            yield decode_json(MarketSnapshot, line)
        except DecodeError as exc:
            raise ValueError(f"{name}:{number}: {exc.reason}") from None
