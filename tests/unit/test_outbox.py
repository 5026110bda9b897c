import os
from pathlib import Path

import orjson
import pytest

from worker.io.outbox import Outbox, OutboxLine, event_id_of, ready_relpath

MINUTE = 1_767_225_600_000  # 2026-01-01 00:00 UTC


def line(event_id: str, symbol: str = "BTCUSDT", ts: int = MINUTE) -> OutboxLine:
    payload = orjson.dumps({"event_id": event_id, "symbol": symbol, "event_ts_ms": ts})
    return OutboxLine(symbol, ts, event_id, payload)


def test_path_follows_symbol_and_utc_minute() -> None:
    assert ready_relpath("ETHUSDT", MINUTE + 61_000) == Path("exec_events/ETHUSDT/exec_20260101_0001.jsonl")


def test_publish_appends_in_order_and_is_idempotent(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path)
    assert outbox.publish([line("a.1"), line("b.1")]) == 2
    assert outbox.publish([line("b.1"), line("c.1")]) == 1  # b.1 already there
    (path,) = outbox.ready_files()
    ids = [event_id_of(raw) for raw in path.read_bytes().splitlines()]
    assert ids == ["a.1", "b.1", "c.1"]
    assert path.read_bytes().endswith(b"\n")
    assert outbox.leftover_parts() == []


def test_lines_are_split_by_symbol_and_minute(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path)
    outbox.publish([line("a.1"), line("b.1", "ETHUSDT"), line("c.1", ts=MINUTE + 60_000)])
    names = sorted(str(p.relative_to(outbox.ready)) for p in outbox.ready_files())
    assert names == [
        "exec_events/BTCUSDT/exec_20260101_0000.jsonl",
        "exec_events/BTCUSDT/exec_20260101_0001.jsonl",
        "exec_events/ETHUSDT/exec_20260101_0000.jsonl",
    ]


def test_a_torn_part_file_never_reaches_ready_and_is_cleaned_up(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path)
    outbox.publish([line("a.1")])
    # A writer that died mid-write leaves a .part with a pid that no longer runs.
    dead = outbox.spool / "BTCUSDT.exec_20260101_0000.999999999.part"
    dead.write_bytes(b'{"event_id":"x.1","sym')
    assert outbox.remove_stale_parts() == 1
    assert [event_id_of(r) for r in outbox.iter_lines()] == ["a.1"]


def test_transient_rename_failures_are_retried(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    outbox = Outbox(tmp_path)
    real_replace = os.replace
    failures = {"left": 2}

    def flaky_replace(src: str | Path, dst: str | Path) -> None:
        if failures["left"]:
            failures["left"] -= 1
            raise PermissionError(13, "file in use")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", flaky_replace)
    assert outbox.publish([line("a.1")]) == 1
    assert failures["left"] == 0
    assert [event_id_of(r) for r in outbox.iter_lines()] == ["a.1"]


def test_marks_round_trip(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path)
    assert outbox.mark("exec-events.v1", 3) == 0
    outbox.set_mark("exec-events.v1", 3, 1234)
    assert Outbox(tmp_path).mark("exec-events.v1", 3) == 1234
