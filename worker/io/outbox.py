"""The JSONL outbox: a file-system mirror of the committed exec-events topic.

Layout under the root (default `var/outbox/`):

    ready/exec_events/{symbol}/exec_YYYYMMDD_HHMM.jsonl     published minute files (UTC minute of
    ready/exec_events/{symbol}/exec_YYYYMMDD_HHMM.N.jsonl   the event's event_ts_ms); never change
    spool/open/{stream}/exec_events/{symbol}/...            minutes still open for more events
    spool/open/{stream}/WATERMARK                           the stream's event-time watermark
    spool/*.part                                            files being written; never read
    spool/marks/{topic}-{partition}                         mirrored-up-to offset per partition
    spool/locks/{symbol}.lock                               one writer per symbol directory

A *stream* is one exec-events partition (`{topic}-{partition}`, or `replay` for a replay): its
events arrive in order and its watermark is the highest `event_ts_ms` published on it. A minute
collects its lines in an open file (replaced whole: `spool/*.part`, fsync, rename) until the
watermark passes the minute's end plus the grace period; then the open file is renamed into
`ready/` and never touched again (a minute already due when its first lines arrive is written and
renamed into `ready/` directly). Lines of a minute that arrive after it was published go to a
new open file of that minute, published as the next numbered segment beside it
(`exec_..._HHMM.1.jsonl`, `.2`, ...); the first keeps the plain name. Draining a stream (a
revoke, a shutdown, the end of a replay) publishes all its open minutes. The rule for readers
is in docs/outbox.md.

Lines are deduplicated by `event_id` against the open file and every published segment of the
minute, which makes publishing idempotent: after a crash the worker re-publishes from the
partition's mark (see `worker.runtime.recovery`), and lines already present are skipped.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path

import execcore
import orjson
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

log = logging.getLogger(__name__)

EXEC_EVENTS_DIR = "exec_events"
DEFAULT_STREAM = "default"
# How long after a minute ends (in event time, on its stream) it stays open for late events.
DEFAULT_GRACE_MS = 60_000
_MINUTE_MS = 60_000
# A rename that fails with "access denied / in use" (an antivirus or indexer holding a handle on
# Windows) usually succeeds within a few hundred ms; 8 tries with 10..500 ms backoff spans ~2 s.
_RENAME_ATTEMPTS = 8
_EVENT_ID_PREFIX = b'{"event_id":"'
# Parallel writes and fsyncs of one publish; 8 covers a batch's typical spread of files per symbol.
_FSYNC_THREADS = 8
_FILE_NAME = re.compile(r"^exec_(\d{8}_\d{4})(?:\.(\d+))?\.jsonl$")
_STREAM_NAME = re.compile(r"^[A-Za-z0-9._-]{1,200}$")


@dataclass(frozen=True, slots=True)
class OutboxLine:
    symbol: str
    event_ts_ms: int
    event_id: str
    payload: bytes  # the exec-event's canonical JSON, exactly as published to Kafka


def ready_relpath(symbol: str, event_ts_ms: int) -> Path:
    return _minute_relpath(symbol, event_ts_ms // _MINUTE_MS)


@lru_cache(maxsize=4096)
def _minute_relpath(symbol: str, minute: int) -> Path:
    # Cached: a batch's lines fall into a few minutes per symbol, and formatting a UTC time is
    # most of the cost of grouping a line (~3 us).
    name = datetime.fromtimestamp(minute * 60, tz=UTC).strftime("%Y%m%d_%H%M")
    return Path(EXEC_EVENTS_DIR) / symbol / f"exec_{name}.jsonl"


def segment_relpath(base: Path, segment: int) -> Path:
    """Segment 0 is the minute's plain file; later ones are `exec_..._HHMM.{segment}.jsonl`."""
    return base if segment == 0 else base.with_name(f"{base.stem}.{segment}.jsonl")


def file_order(path: Path) -> tuple[str, str, int]:
    """(symbol, minute, segment) of a ready file: the order its lines were published in."""
    match = _FILE_NAME.match(path.name)
    if match is None:
        return (path.parent.name, path.name, 0)
    return (path.parent.name, match.group(1), int(match.group(2) or 0))


@lru_cache(maxsize=4096)
def minute_start_ms(path: Path) -> int:
    match = _FILE_NAME.match(path.name)
    if match is None:
        raise ValueError(f"not an outbox file name: {path.name}")
    minute = datetime.strptime(match.group(1), "%Y%m%d_%H%M").replace(tzinfo=UTC)
    return int(minute.timestamp()) * 1000


def event_id_of(line: bytes) -> str:
    """The event_id of an exec-event line: read straight from the front when it is the first
    field (the usual case), else from the parsed line (events with optional fields serialised
    ahead of it, e.g. a venue intent's `recv_window_ms`)."""
    if line.startswith(_EVENT_ID_PREFIX):
        end = line.index(b'"', len(_EVENT_ID_PREFIX))
        return line[len(_EVENT_ID_PREFIX) : end].decode()
    try:
        event_id = orjson.loads(line)["event_id"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        raise ValueError("not an exec-event line (no event_id)") from None
    if not isinstance(event_id, str):
        raise ValueError("not an exec-event line (event_id is not a string)")
    return event_id


def stream_of(topic: str, partition: int) -> str:
    """The stream name of an exec-events partition (the same as its mark's file name)."""
    return f"{topic}-{partition}"


class Outbox:
    def __init__(self, root: Path, grace_ms: int = DEFAULT_GRACE_MS) -> None:
        if grace_ms < 0:
            raise ValueError("grace_ms must be >= 0")
        self.root = root
        self.grace_ms = grace_ms
        self.ready = root / "ready"
        self.spool = root / "spool"
        self.open = self.spool / "open"
        for directory in (self.ready, self.spool, self.open, self.spool / "marks", self.spool / "locks"):
            directory.mkdir(parents=True, exist_ok=True)
        # Open minutes per stream (relative paths), loaded from disk on a stream's first use and
        # forgotten when it is drained (its next owner may be another process).
        self._open_index: dict[str, set[Path]] = {}
        self._watermarks: dict[str, int] = {}
        self._dirs: set[str] = set()  # directories known to exist (made by this process)
        self._rename = Retrying(
            retry=retry_if_exception_type(PermissionError),
            stop=stop_after_attempt(_RENAME_ATTEMPTS),
            wait=wait_exponential(multiplier=0.01, max=0.5),
            before_sleep=lambda state: log.warning(
                "outbox rename failed (%s); retrying, attempt %d",
                state.outcome.exception() if state.outcome else "?",
                state.attempt_number,
            ),
            reraise=True,
        )

    # -- publishing ---------------------------------------------------------------------------

    def publish(self, lines: Iterable[OutboxLine], stream: str = DEFAULT_STREAM) -> int:
        """Adds lines (in the given order) to their minutes' open files on `stream`, then
        publishes the minutes the stream's watermark has passed; returns how many lines were new.

        A minute that is due already when its first lines arrive (the batch covers more than the
        grace period plus a minute of event time), with nothing open or published for it yet,
        skips the open file: its lines are written, fsync'ed and renamed into `ready/` at once,
        the same bytes and the same single rename the open file would have had, one file
        operation round instead of two."""
        self._check_stream(stream)
        index = self._index(stream)
        # Grouped by symbol and UTC minute number (ints hash and compare far cheaper than paths).
        by_symbol: dict[str, dict[int, list[OutboxLine]]] = {}
        watermark = self._watermark(stream)
        for line in lines:
            files = by_symbol.get(line.symbol)
            if files is None:
                files = by_symbol[line.symbol] = {}
            minute = line.event_ts_ms // _MINUTE_MS
            batch = files.get(minute)
            if batch is None:
                files[minute] = [line]
            else:
                batch.append(line)
            if line.event_ts_ms > watermark:
                watermark = line.event_ts_ms
        horizon = watermark - _MINUTE_MS - self.grace_ms  # minutes starting at or before it are due
        written = sum(self._merge_symbol(stream, symbol, files, index, horizon) for symbol, files in by_symbol.items())
        if watermark > self._watermark(stream):
            self._set_watermark(stream, watermark)
        self._publish_due(stream, lambda relpath: minute_start_ms(relpath) <= horizon)
        return written

    def drain(self, stream: str = DEFAULT_STREAM) -> int:
        """Publishes every open minute of `stream` (revoke, shutdown, end of a replay)."""
        self._check_stream(stream)
        published = self._publish_due(stream, lambda _: True)
        self._open_index.pop(stream, None)
        self._watermarks.pop(stream, None)
        return published

    def drain_all(self) -> int:
        """Publishes the open minutes of every stream (for tools that own the whole outbox)."""
        return sum(self.drain(path.name) for path in sorted(self.open.iterdir()) if path.is_dir())

    def open_files(self) -> list[Path]:
        """Minute files not yet published (any stream)."""
        return sorted(self.open.glob(f"*/{EXEC_EVENTS_DIR}/*/*.jsonl"))

    def _merge_symbol(
        self, stream: str, symbol: str, files: dict[int, list[OutboxLine]], index: set[Path], horizon: int
    ) -> int:
        """Rewrites a symbol's touched open files (or writes a due minute's file straight into
        `ready/`): all parts written and fsync'ed together, then renamed."""
        ready_dir = os.path.join(self.ready, EXEC_EVENTS_DIR, symbol)
        pid = os.getpid()
        with self._symbol_lock(symbol):
            staged: list[tuple[str, str, bytes]] = []
            written = 0
            for minute, lines in files.items():
                relpath = _minute_relpath(symbol, minute)
                name = relpath.name
                ready = os.path.join(ready_dir, name)
                if minute * _MINUTE_MS <= horizon and relpath not in index and not os.path.exists(ready):
                    # Due, nothing open, nothing published: straight to its plain name in ready/.
                    target = ready
                    content, fresh = _fresh_lines(set(), lines)
                else:
                    open_file = self._open_dir(stream) / relpath
                    content, fresh = self._merged_content(open_file, self._published_ids(relpath), lines)
                    target = str(open_file)
                    if fresh:
                        index.add(relpath)
                if not fresh:
                    continue
                self._make_dir(os.path.dirname(target))
                staged.append((os.path.join(self.spool, f"{symbol}.{name}.{pid}.part"), target, content))
                written += fresh
            self._write_round(staged)
            return written

    def _published_ids(self, relpath: Path) -> set[str]:
        """Event ids already in `ready/` for this minute (its plain file and every segment)."""
        base = self.ready / relpath
        if not base.exists():
            return set()  # segments exist only beside a published plain file
        ids: set[str] = set()
        for path in [base, *self._segments(relpath)]:
            ids.update(event_id_of(raw) for raw in path.read_bytes().splitlines())
        return ids

    def _segments(self, relpath: Path) -> list[Path]:
        """The published segments 1, 2, ... of a minute whose plain file is published. Segment
        n+1 is only ever created after n (`_next_segment`, under the symbol lock), so they are
        probed in order up to the first missing one: a stat or two, where listing the symbol's
        directory (one file per minute) cost more per minute the longer the worker ran."""
        found: list[Path] = []
        while (path := self.ready / segment_relpath(relpath, len(found) + 1)).exists():
            found.append(path)
        return found

    @staticmethod
    def _merged_content(target: Path, published: set[str], lines: list[OutboxLine]) -> tuple[bytes, int]:
        try:
            existing = target.read_bytes()
        except FileNotFoundError:
            existing = b""
        seen = published | {event_id_of(raw) for raw in existing.splitlines()}
        content, fresh = _fresh_lines(seen, lines)
        if not fresh:
            return existing, 0
        return existing + content, fresh

    def _publish_due(self, stream: str, due: Callable[[Path], bool]) -> int:
        """Moves the stream's due open files into `ready/`, each under the minute's next free
        segment name; returns how many files were published."""
        index = self._index(stream)
        by_symbol: dict[str, list[Path]] = {}
        for relpath in sorted(relpath for relpath in index if due(relpath)):
            by_symbol.setdefault(relpath.parent.name, []).append(relpath)
        published = 0
        touched: set[Path] = set()
        for symbol, relpaths in by_symbol.items():
            with self._symbol_lock(symbol):
                for relpath in relpaths:
                    source = self._open_dir(stream) / relpath
                    if source.exists():
                        target = self._next_segment(relpath)
                        self._make_dir(target.parent)
                        # Under the symbol lock nobody else names a segment of this minute, so the
                        # target does not exist: a published file is created once, never replaced.
                        self._rename(os.rename, source, target)
                        touched.update((source.parent, target.parent))
                        published += 1
                    index.discard(relpath)
        for directory in touched:
            _fsync_dir(directory)
        return published

    def _next_segment(self, relpath: Path) -> Path:
        base = self.ready / relpath
        if not base.exists():
            return base
        return self.ready / segment_relpath(relpath, len(self._segments(relpath)) + 1)

    def _write_round(self, staged: list[tuple[str, str, bytes]]) -> None:
        """Every (part, target, content): written and fsync'ed together, renamed onto its target,
        then the targets' directories fsync'ed. One compiled call that holds no GIL
        (`execcore.write_files`: the writes and fsyncs run in parallel, as the device serves
        several at once); a rename refused with PermissionError (an indexer or antivirus holding
        a handle, on Windows) is retried here, and the rest after it."""
        if not staged:
            return
        directories = sorted({os.path.dirname(target) for _, target, _ in staged})
        if sys.platform == "win32":
            directories = []  # directories cannot be opened for fsync on Windows (see _fsync_dir)
        done = execcore.write_files(staged, directories, _FSYNC_THREADS)
        if done < len(staged):
            for part, target, _ in staged[done:]:
                self._rename(os.replace, part, target)
            for directory in directories:
                _fsync_dir(directory)

    def _make_dir(self, directory: str | Path) -> None:
        """`mkdir -p`, once per directory and process (directories are never removed)."""
        key = os.fspath(directory)
        if key not in self._dirs:
            os.makedirs(key, exist_ok=True)
            self._dirs.add(key)

    def _replace(self, source: str | Path, target: str | Path) -> None:
        """`os.replace`, retried (`_rename`) only when it failed with PermissionError."""
        try:
            os.replace(source, target)
        except PermissionError:
            self._rename(os.replace, source, target)

    def _open_dir(self, stream: str) -> Path:
        return self.open / stream

    def _index(self, stream: str) -> set[Path]:
        index = self._open_index.get(stream)
        if index is None:
            root = self._open_dir(stream)
            index = {path.relative_to(root) for path in root.glob(f"{EXEC_EVENTS_DIR}/*/*.jsonl")}
            self._open_index[stream] = index
        return index

    def _watermark(self, stream: str) -> int:
        if stream not in self._watermarks:
            try:
                self._watermarks[stream] = int((self._open_dir(stream) / "WATERMARK").read_text())
            except (FileNotFoundError, ValueError):
                self._watermarks[stream] = 0
        return self._watermarks[stream]

    def _set_watermark(self, stream: str, watermark: int) -> None:
        # Never ahead of the lines on disk (it is written after them), so a crash can only make
        # it lag: minutes then stay open a little longer, nothing is published early.
        self._watermarks[stream] = watermark
        path = self._open_dir(stream) / "WATERMARK"
        path.parent.mkdir(parents=True, exist_ok=True)
        part = self.spool / f"WATERMARK.{stream}.{os.getpid()}.part"
        part.write_text(str(watermark))
        self._replace(part, path)

    @staticmethod
    def _check_stream(stream: str) -> None:
        if not _STREAM_NAME.match(stream) or stream in {".", ".."}:
            raise ValueError(f"bad outbox stream name {stream!r}")

    # -- marks: how far each exec-events partition is mirrored ---------------------------------

    def mark(self, topic: str, partition: int) -> int:
        try:
            return int((self.spool / "marks" / f"{topic}-{partition}").read_text())
        except FileNotFoundError:
            return 0

    def set_mark(self, topic: str, partition: int, next_offset: int) -> None:
        path = self.spool / "marks" / f"{topic}-{partition}"
        part = path.parent / f"{path.name}.{os.getpid()}.part"
        part.write_text(str(next_offset))
        self._replace(part, path)

    # -- reading --------------------------------------------------------------------------------

    def ready_files(self) -> list[Path]:
        """Published files, per symbol in the order they were published (minute, segment)."""
        return sorted((self.ready / EXEC_EVENTS_DIR).rglob("*.jsonl"), key=file_order)

    def iter_lines(self) -> Iterator[bytes]:
        for path in self.ready_files():
            yield from path.read_bytes().splitlines()

    def leftover_parts(self) -> list[Path]:
        return sorted(self.spool.rglob("*.part"))

    def remove_stale_parts(self) -> int:
        """Deletes `.part` files of this host's dead writers (pid no longer running)."""
        removed = 0
        for part in self.leftover_parts():
            pid = part.suffixes[-2].lstrip(".") if len(part.suffixes) >= 2 else ""
            if pid.isdigit() and int(pid) != os.getpid() and _pid_alive(int(pid)):
                continue
            part.unlink(missing_ok=True)
            removed += 1
        return removed

    @contextmanager
    def _symbol_lock(self, symbol: str) -> Iterator[None]:
        # Several worker processes on one host may share an outbox; a symbol lives in one input
        # partition, but a rebalance can hand it over while the old owner is still publishing.
        with open(self.spool / "locks" / f"{symbol}.lock", "a+b") as handle:
            if sys.platform != "win32":
                import fcntl

                fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                if sys.platform != "win32":
                    fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _fresh_lines(seen: set[str], lines: list[OutboxLine]) -> tuple[bytes, int]:
    """The payloads of `lines` whose event_id is not in `seen` (nor earlier in `lines`), each
    newline-terminated, and how many they are."""
    fresh: list[bytes] = []
    for line in lines:
        if line.event_id not in seen:
            seen.add(line.event_id)
            fresh.append(line.payload)
    if not fresh:
        return b"", 0
    fresh.append(b"")
    return b"\n".join(fresh), len(fresh) - 1


def _fsync_dir(directory: str | Path) -> None:
    if sys.platform == "win32":
        return  # directories cannot be opened for fsync on Windows; NTFS journals the rename
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
