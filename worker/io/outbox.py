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
`ready/` and never touched again. Lines of a minute that arrive after it was published go to a
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
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

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
_FILE_NAME = re.compile(r"^exec_(\d{8}_\d{4})(?:\.(\d+))?\.jsonl$")
_STREAM_NAME = re.compile(r"^[A-Za-z0-9._-]{1,200}$")


@dataclass(frozen=True, slots=True)
class OutboxLine:
    symbol: str
    event_ts_ms: int
    event_id: str
    payload: bytes  # the exec-event's canonical JSON, exactly as published to Kafka


def ready_relpath(symbol: str, event_ts_ms: int) -> Path:
    minute = datetime.fromtimestamp(event_ts_ms / 1000, tz=UTC).strftime("%Y%m%d_%H%M")
    return Path(EXEC_EVENTS_DIR) / symbol / f"exec_{minute}.jsonl"


def segment_relpath(base: Path, segment: int) -> Path:
    """Segment 0 is the minute's plain file; later ones are `exec_..._HHMM.{segment}.jsonl`."""
    return base if segment == 0 else base.with_name(f"{base.stem}.{segment}.jsonl")


def file_order(path: Path) -> tuple[str, str, int]:
    """(symbol, minute, segment) of a ready file: the order its lines were published in."""
    match = _FILE_NAME.match(path.name)
    if match is None:
        return (path.parent.name, path.name, 0)
    return (path.parent.name, match.group(1), int(match.group(2) or 0))


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
        # Parallel fsyncs of one publish; 8 covers a batch's typical spread of files per symbol.
        self._fsync_pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="outbox-fsync")
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
        publishes the minutes the stream's watermark has passed; returns how many lines were new."""
        self._check_stream(stream)
        index = self._index(stream)
        by_symbol: dict[str, dict[Path, list[OutboxLine]]] = {}
        watermark = self._watermark(stream)
        for line in lines:
            files = by_symbol.setdefault(line.symbol, {})
            files.setdefault(ready_relpath(line.symbol, line.event_ts_ms), []).append(line)
            watermark = max(watermark, line.event_ts_ms)
        written = sum(self._merge_symbol(stream, symbol, files, index) for symbol, files in by_symbol.items())
        if watermark > self._watermark(stream):
            self._set_watermark(stream, watermark)
        self._publish_due(stream, lambda relpath: minute_start_ms(relpath) + _MINUTE_MS + self.grace_ms <= watermark)
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

    def _merge_symbol(self, stream: str, symbol: str, files: dict[Path, list[OutboxLine]], index: set[Path]) -> int:
        """Rewrites a symbol's touched open files: all parts written, fsync'ed together, then renamed."""
        with self._symbol_lock(symbol):
            staged: list[tuple[Path, Path]] = []
            written = 0
            for relpath, lines in files.items():
                target = self._open_dir(stream) / relpath
                content, fresh = self._merged_content(target, self._published_ids(relpath), lines)
                if not fresh:
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                part = self.spool / f"{symbol}.{relpath.stem}.{os.getpid()}.part"
                with open(part, "wb") as handle:
                    handle.write(content)
                staged.append((part, target))
                index.add(relpath)
                written += fresh
            # fsync releases the GIL and the device serves several at once: one round of
            # parallel fsyncs instead of one after another (3-5x fewer stalls on this machine).
            list(self._fsync_pool.map(_fsync_file, [part for part, _ in staged]))
            for part, target in staged:
                self._rename(os.replace, part, target)
            for directory in {target.parent for _, target in staged}:
                _fsync_dir(directory)
            return written

    def _published_ids(self, relpath: Path) -> set[str]:
        """Event ids already in `ready/` for this minute (its plain file and every segment)."""
        base = self.ready / relpath
        if not base.exists():
            return set()  # segments exist only beside a published plain file
        ids: set[str] = set()
        for path in [base, *base.parent.glob(f"{base.stem}.*.jsonl")]:
            ids.update(event_id_of(raw) for raw in path.read_bytes().splitlines())
        return ids

    @staticmethod
    def _merged_content(target: Path, published: set[str], lines: list[OutboxLine]) -> tuple[bytes, int]:
        try:
            existing = target.read_bytes()
        except FileNotFoundError:
            existing = b""
        seen = published | {event_id_of(raw) for raw in existing.splitlines()}
        fresh: list[bytes] = []
        for line in lines:
            if line.event_id not in seen:
                seen.add(line.event_id)
                fresh.append(line.payload)
        if not fresh:
            return existing, 0
        return existing + b"\n".join(fresh) + b"\n", len(fresh)

    def _publish_due(self, stream: str, due: Callable[[Path], bool]) -> int:
        """Moves the stream's due open files into `ready/`, each under the minute's next free
        segment name; returns how many files were published."""
        index = self._index(stream)
        published = 0
        touched: set[Path] = set()
        for relpath in sorted(relpath for relpath in index if due(relpath)):
            source = self._open_dir(stream) / relpath
            symbol = relpath.parent.name
            with self._symbol_lock(symbol):
                if source.exists():
                    target = self._next_segment(relpath)
                    target.parent.mkdir(parents=True, exist_ok=True)
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
        taken = [file_order(path)[2] for path in base.parent.glob(f"{base.stem}.*.jsonl")]
        return self.ready / segment_relpath(relpath, max(taken, default=0) + 1)

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
        self._rename(os.replace, part, path)

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
        self._rename(os.replace, part, path)

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


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(directory: Path) -> None:
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
