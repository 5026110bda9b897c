import hashlib
import os
import random
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
    assert outbox.ready_files() == []  # the minute is still open
    outbox.drain()
    assert outbox.publish([line("c.1")]) == 0  # already published
    (path,) = outbox.ready_files()
    ids = [event_id_of(raw) for raw in path.read_bytes().splitlines()]
    assert ids == ["a.1", "b.1", "c.1"]
    assert path.read_bytes().endswith(b"\n")
    assert outbox.leftover_parts() == []


def test_lines_are_split_by_symbol_and_minute(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path)
    outbox.publish([line("a.1"), line("b.1", "ETHUSDT"), line("c.1", ts=MINUTE + 60_000)])
    outbox.drain()
    names = sorted(str(p.relative_to(outbox.ready)) for p in outbox.ready_files())
    assert names == [
        "exec_events/BTCUSDT/exec_20260101_0000.jsonl",
        "exec_events/BTCUSDT/exec_20260101_0001.jsonl",
        "exec_events/ETHUSDT/exec_20260101_0000.jsonl",
    ]


def test_a_torn_part_file_never_reaches_ready_and_is_cleaned_up(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path)
    outbox.publish([line("a.1")])
    outbox.drain()
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
    outbox.drain()
    assert failures["left"] == 0
    assert [event_id_of(r) for r in outbox.iter_lines()] == ["a.1"]


def test_marks_round_trip(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path)
    assert outbox.mark("exec-events.v1", 3) == 0
    outbox.set_mark("exec-events.v1", 3, 1234)
    assert Outbox(tmp_path).mark("exec-events.v1", 3) == 1234


# -- published files never change -------------------------------------------------------------


def names(outbox: Outbox) -> list[str]:
    return [str(p.relative_to(outbox.ready / "exec_events")) for p in outbox.ready_files()]


def test_a_minute_is_published_once_the_watermark_passes_it_plus_the_grace(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path, grace_ms=30_000)
    outbox.publish([line("a.1", ts=MINUTE + 5_000)], "s")
    outbox.publish([line("b.1", ts=MINUTE + 60_000 + 29_999)], "s")  # 1 ms short of end + grace
    assert names(outbox) == []
    outbox.publish([line("c.1", ts=MINUTE + 90_000)], "s")
    assert names(outbox) == ["BTCUSDT/exec_20260101_0000.jsonl"]
    # Another stream's watermark does not publish this stream's minutes.
    outbox.publish([line("d.1", "ETHUSDT", ts=MINUTE)], "t")
    outbox.publish([line("e.1", ts=MINUTE + 10 * 60_000)], "s")
    assert "ETHUSDT/exec_20260101_0000.jsonl" not in names(outbox)
    assert outbox.drain("t") == 1 and "ETHUSDT/exec_20260101_0000.jsonl" in names(outbox)


def test_late_events_of_a_published_minute_go_to_numbered_segments(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path, grace_ms=0)
    outbox.publish([line("a.1"), line("b.1", ts=MINUTE + 60_000)], "s")
    first = (outbox.ready / "exec_events/BTCUSDT/exec_20260101_0000.jsonl").read_bytes()
    outbox.publish([line("c.1", ts=MINUTE + 1), line("a.1")], "s")  # late; a.1 already published
    outbox.publish([line("d.1", ts=MINUTE + 2)], "s")
    outbox.drain("s")
    assert names(outbox) == [
        "BTCUSDT/exec_20260101_0000.jsonl",
        "BTCUSDT/exec_20260101_0000.1.jsonl",
        "BTCUSDT/exec_20260101_0000.2.jsonl",
        "BTCUSDT/exec_20260101_0001.jsonl",
    ]
    assert (outbox.ready / "exec_events/BTCUSDT/exec_20260101_0000.jsonl").read_bytes() == first
    assert [event_id_of(r) for r in outbox.iter_lines()] == ["a.1", "c.1", "d.1", "b.1"]


def test_a_restarted_writer_republishing_from_its_mark_adds_no_line(tmp_path: Path) -> None:
    lines = [line(f"e{n}.1", ts=MINUTE + n * 7_000) for n in range(40)]
    first = Outbox(tmp_path, grace_ms=10_000)
    first.publish(lines[:25], "s")
    # Crash: a new process republishes everything (its mark was never moved) and more.
    second = Outbox(tmp_path, grace_ms=10_000)
    assert second.publish(lines, "s") == 15
    second.drain("s")
    ids = [event_id_of(r) for r in second.iter_lines()]
    assert sorted(ids) == sorted(x.event_id for x in lines) and len(ids) == len(set(ids))
    assert second.open_files() == []


def test_a_tailer_of_ready_never_sees_a_published_file_change(tmp_path: Path) -> None:
    """Many batches, 10% of them late by up to five minutes, re-publishes after 'crashes': every
    file the tailer sees keeps the content it had when first seen, and the files together hold
    every event exactly once."""
    rng = random.Random(7)
    outbox = Outbox(tmp_path, grace_ms=20_000)
    seen: dict[Path, str] = {}

    def tail() -> None:
        for path in outbox.ready_files():
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            assert seen.setdefault(path, digest) == digest, f"{path} changed after it was published"

    clock, made = MINUTE, []
    for batch in range(300):
        chunk = []
        for n in range(rng.randint(1, 12)):
            clock += rng.randint(0, 4_000)
            late = rng.random() < 0.1
            ts = clock - rng.randint(0, 300_000) if late else clock
            chunk.append(line(f"b{batch}-{n}.1", rng.choice(["BTCUSDT", "ETHUSDT"]), ts))
        made.extend(chunk)
        if rng.random() < 0.05:
            outbox = Outbox(tmp_path, grace_ms=20_000)  # a restarted process ...
            outbox.publish(made[-40:], "s")  # ... re-publishes from its mark: nothing new
        outbox.publish(chunk, "s")
        tail()
    outbox.drain("s")
    tail()
    ids = [event_id_of(r) for r in outbox.iter_lines()]
    assert len(ids) == len(set(ids)) and set(ids) == {x.event_id for x in made}
    assert any(".1.jsonl" in p.name for p in seen)  # late events did make segments
    assert len(seen) == len(outbox.ready_files())


def test_lines_whose_event_id_is_not_the_first_field_are_deduplicated_too(tmp_path: Path) -> None:
    # A venue intent serialises its optional request fields ahead of event_id.
    payload = b'{"recv_window_ms":5000,"attempt":1,"event_id":"i.1","symbol":"BTCUSDT"}'
    intent = OutboxLine("BTCUSDT", MINUTE, "i.1", payload)
    assert event_id_of(payload) == "i.1"
    outbox = Outbox(tmp_path)
    assert outbox.publish([intent, line("a.1")], "s") == 2
    assert outbox.publish([intent, line("a.1"), line("b.1")], "s") == 1  # reads the open file back
    outbox.drain("s")
    assert outbox.publish([intent], "s") == 0  # and the published one
    with pytest.raises(ValueError, match="no event_id"):
        event_id_of(b'{"symbol":"BTCUSDT"}')


def test_a_rename_the_compiled_round_could_not_do_is_retried_with_the_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`execcore.write_files` stops at a rename refused with PermissionError (Windows: a handle
    held by an indexer) and says how many it did; the outbox renames that one and the rest."""
    import execcore

    from worker.io import outbox as outbox_module

    real = execcore.write_files

    def first_rename_only(files: list[tuple[str, str, bytes]], directories: list[str], threads: int) -> int:
        for part, _, content in files:
            Path(part).write_bytes(content)
        os.replace(files[0][0], files[0][1])
        return 1

    monkeypatch.setattr(outbox_module.execcore, "write_files", first_rename_only)
    outbox = Outbox(tmp_path, grace_ms=0)
    lines = [line(f"m{n}.1", ts=MINUTE + n * 60_000) for n in range(4)]
    assert outbox.publish([*lines, line("late.1", ts=MINUTE + 10 * 60_000)], "s") == 5
    monkeypatch.setattr(outbox_module.execcore, "write_files", real)
    assert len(outbox.ready_files()) == 4  # the four due minutes, straight to ready/
    assert outbox.leftover_parts() == []
    outbox.drain("s")
    assert sorted(event_id_of(r) for r in outbox.iter_lines()) == sorted(["late.1", *(f"m{n}.1" for n in range(4))])
