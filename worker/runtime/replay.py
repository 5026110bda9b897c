"""Deterministic replay: the same decisions give the same exec-events, byte for byte, whether they
come from a file or a topic, from one partition or many, in one run or the next.

Canonical order (what makes partitioning irrelevant): decisions are sorted by
(`event_ts_ms`, `symbol`, position of the decision among its symbol's decisions in the input).
Keyed partitioning keeps each symbol's decisions in order, so that key is the same for a file
and for a topic with any number of partitions. The n-th decision in that order carries the
source coordinates (`replay`, 0, n) in its events. Time is sim-time (`event_ts_ms`); randomness
is the seeded, per-order `Rng`. With market data, the fills of resting orders are emitted when
market time passes them: before the first decision at or after the fill's snapshot, ordered by
(snapshot time, symbol, order arrival); the rest after the last decision. The digest is SHA-256
over the canonical exec-event lines, each followed by a newline, in that order.
"""

from __future__ import annotations

import gc
import hashlib
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import execcore
import orjson

from worker.codec.errors import DecodeError
from worker.codec.json_codec import DEFAULT_MAX_MESSAGE_BYTES, decode_json, encode_json
from worker.contract.events import ExecEvent
from worker.contract.messages import Decision
from worker.contract.orders import SourceRef
from worker.contract.trusted import trusted
from worker.core.backtest import BacktestExecutor
from worker.core.engine import ExecutionEngine
from worker.core.order_table import OrderTable
from worker.io.outbox import Outbox, OutboxLine
from worker.policy.ids import event_seq
from worker.runtime.venue import handle

REPLAY_SOURCE = "replay"
# Lines handed to the sinks per call: large enough to amortise outbox file rewrites and producer
# batches, small enough that a long replay never holds its whole output in memory.
_SINK_CHUNK = 20_000

# Where a replay's exec-events go as they are made (an outbox, a topic, a test's list), in order.
ReplaySink = Callable[[Sequence[OutboxLine]], Awaitable[None]]
# Told (decisions done, decisions in all) every `PROGRESS_EVERY` decisions and at the end; it may
# raise to stop the replay (the CLI does on Ctrl-C). Never affects the events.
ReplayProgress = Callable[[int, int], None]
PROGRESS_EVERY = 1_000


@dataclass
class ReplayResult:
    decisions: int = 0
    events: int = 0
    orders: Counter[str] = field(default_factory=Counter)  # orders by final status
    rejected: Counter[str] = field(default_factory=Counter)  # undecodable input, by error class
    open_orders: int = 0  # resting orders the market data never finished
    observed: Counter[str] = field(default_factory=Counter)  # orders let go by a rule in `observe`
    digest: str = ""
    # A replay of every input role (worker/runtime/replay_merge.py) also counts these.
    signals: int = 0
    dropped: Counter[str] = field(default_factory=Counter)  # inputs that made no order, by reason
    control: Counter[str] = field(default_factory=Counter)  # control records applied, by role
    ignored: Counter[str] = field(default_factory=Counter)  # control records that could not be used


def outbox_sink(outbox: Outbox) -> ReplaySink:
    """Writes a replay into an outbox layout (the same files a live worker mirrors), on the
    outbox stream `replay`; the caller publishes the last open minutes with `outbox.drain`."""

    async def write(lines: Sequence[OutboxLine]) -> None:
        outbox.publish(lines, REPLAY_SOURCE)

    return write


def list_sink(lines: list[OutboxLine]) -> ReplaySink:
    """Appends a replay's lines to `lines` (for callers that inspect the events themselves)."""

    async def write(chunk: Sequence[OutboxLine]) -> None:
        lines.extend(chunk)

    return write


def canonical_order(values: Iterable[bytes]) -> tuple[list[Decision], Counter[str]]:
    """Decodes input (in per-symbol order) and sorts it canonically; bad input is counted."""
    decoded: list[tuple[int, str, int, Decision]] = []
    per_symbol: Counter[str] = Counter()
    rejected: Counter[str] = Counter()
    for value in values:
        try:
            decision = decode_json(Decision, value)
        except DecodeError as exc:
            rejected[exc.error_class.value] += 1
            continue
        decoded.append((decision.event_ts_ms, decision.symbol, per_symbol[decision.symbol], decision))
        per_symbol[decision.symbol] += 1
    decoded.sort(key=lambda item: item[:3])
    return [item[3] for item in decoded], rejected


async def replay(
    engine: ExecutionEngine,
    values: Iterable[bytes],
    sinks: Sequence[ReplaySink] = (),
    progress: ReplayProgress | None = None,
    *,
    compiled: bool = True,
    data: bytes | None = None,
) -> ReplayResult:
    """Runs decisions through the engine in canonical order; returns counts and the digest.

    With a backtest executor that holds market data, market time advances to each decision's
    `event_ts_ms` before it is handled (resting orders fill from the snapshots in between), and
    after the last decision to the end of the market data.

    The plain backtest (immediate fills, no market data, one mode, no rate wall) runs as the
    compiled fold (rust/execcore/src/fold.rs), byte for byte the engine's events; every other
    configuration runs through the engine here. `compiled=False` runs the engine in any case:
    the oracle of the differential tests. `data`: the JSONL input whole, when `values` are its
    lines (`jsonl_lines`); the compiled fold splits it itself.
    """
    if compiled and _has_compiled_fold(engine):
        fold = compiled_fold(engine, data, None) if data is not None else compiled_fold(engine, None, list(values))
        if fold is not None:
            return await _drain(fold, sinks, progress)
    with cyclic_gc_paused():
        return await _fold(engine, values, sinks, progress)


def _has_compiled_fold(engine: ExecutionEngine) -> bool:
    executor = engine.executor
    return isinstance(executor, BacktestExecutor) and executor.immediate_profile() is not None


def compiled_fold(
    engine: ExecutionEngine, data: bytes | None, values: list[bytes] | None
) -> execcore.ReplayFold | None:
    """The compiled fold for this engine's configuration, or None where it has none."""
    executor = engine.executor
    profile = executor.immediate_profile() if isinstance(executor, BacktestExecutor) else None
    gate = engine.policy.fixed_gate()
    if profile is None or gate is None:
        return None
    seed, latency_base_ms, thresholds = profile
    mode, min_consistency = gate
    return execcore.ReplayFold(
        data,
        values,
        seed=seed,
        rounding=engine.config.rounding.value,
        min_consistency=min_consistency,
        mode=mode,
        executor=executor.name,
        latency_base_ms=latency_base_ms,
        thresholds=thresholds,
        max_bytes=DEFAULT_MAX_MESSAGE_BYTES,
    )


async def _drain(
    fold: execcore.ReplayFold, sinks: Sequence[ReplaySink], progress: ReplayProgress | None = None
) -> ReplayResult:
    """Runs the compiled fold to its end, handing its lines to the sinks chunk by chunk."""
    keep = bool(sinks)
    total = fold.decisions
    if progress is not None:
        progress(0, total)
    while not fold.done:
        chunk = fold.step(min(_SINK_CHUNK, PROGRESS_EVERY), keep)
        if progress is not None and not fold.done:
            progress(fold.position, total)
        if chunk:
            lines = [OutboxLine(symbol, ts, event_id, payload) for symbol, ts, event_id, payload in chunk]
            for sink in sinks:
                await sink(lines)
    if progress is not None:
        progress(total, total)
    result = ReplayResult(decisions=fold.decisions, events=fold.events, digest=fold.hexdigest())
    result.rejected.update(fold.rejected())
    result.orders.update(fold.by_status())
    return result


@contextmanager
def cyclic_gc_paused() -> Iterator[None]:
    """Pauses Python's cycle collector for a replay, and restores its previous state.

    A replay allocates millions of short-lived, acyclic objects while the order book grows; the
    collector's full passes rescan that book again and again and, measured over 50,000
    decisions, collect nothing (gc.get_stats: 0 collected) while costing 20-30% of the run.
    Reference counting still frees everything at once; any cycle made meanwhile is left for the
    collector's next pass after the pause.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class EventStream:
    """A replay's output as it is made: each event's canonical line goes into the digest and to
    the sinks (chunk by chunk); the first event of an order counts its `observed` rules."""

    def __init__(self, sinks: Sequence[ReplaySink], result: ReplayResult) -> None:
        self._sinks = sinks
        self._result = result
        self._digest = hashlib.sha256()
        self._pending: list[OutboxLine] = []

    async def emit(self, events: Iterable[ExecEvent]) -> None:
        for event in events:
            if event.observed is not None and event_seq(event.event_id) == 1:
                self._result.observed.update(event.observed)
            line = encode_json(event)
            self._digest.update(line + b"\n")
            self._pending.append(OutboxLine(event.symbol, event.event_ts_ms, event.event_id, line))
        if len(self._pending) >= _SINK_CHUNK:
            await self.flush()

    async def flush(self) -> None:
        for sink in self._sinks:
            await sink(self._pending)
        self._result.events += len(self._pending)
        self._pending.clear()

    async def finish(self, engine: ExecutionEngine, book: OrderTable) -> None:
        """After the last input: the market data's remaining fills, the counts, the digest."""
        result = self._result
        venue = engine.executor if isinstance(engine.executor, BacktestExecutor) else None
        if venue is not None:
            for client_order_id, update in venue.fills_until(None):
                await self.emit(engine.observe(book, client_order_id, update))
            result.open_orders = venue.open_orders()
        await self.flush()
        book.commit()
        result.orders.update({status.value: count for status, count in book.by_status().items()})
        result.digest = self._digest.hexdigest()


async def _fold(
    engine: ExecutionEngine, values: Iterable[bytes], sinks: Sequence[ReplaySink], progress: ReplayProgress | None
) -> ReplayResult:
    decisions, rejected = canonical_order(values)
    result = ReplayResult(decisions=len(decisions), rejected=rejected)
    if progress is not None:
        progress(0, len(decisions))
    book = OrderTable()
    stream = EventStream(sinks, result)
    venue = engine.executor if isinstance(engine.executor, BacktestExecutor) else None
    for index, decision in enumerate(decisions):
        if venue is not None:
            for client_order_id, update in venue.fills_until(decision.event_ts_ms):
                await stream.emit(engine.observe(book, client_order_id, update))
        source = trusted(SourceRef, topic=REPLAY_SOURCE, partition=0, offset=index)
        await stream.emit((await handle(engine, book, decision, source)).events)
        if progress is not None and (index + 1) % PROGRESS_EVERY == 0:
            progress(index + 1, len(decisions))
    await stream.finish(engine, book)
    if progress is not None:
        progress(len(decisions), len(decisions))
    return result


def jsonl_blob(path: Path) -> bytes | None:
    """A JSONL input file's bytes (None for an Avro container): for `replay(..., data=)`."""
    return None if path.suffix == ".avro" else path.read_bytes()


def jsonl_lines(data: bytes) -> Iterator[bytes]:
    """The records of a JSONL blob, as `read_input_file` gives them, split only when iterated
    (a generator, not a generator expression: that would split the whole blob at once, ~5% of
    a compiled replay that never reads the lines)."""
    for line in data.splitlines():
        if line.strip():
            yield line


def read_input_file(path: Path) -> list[bytes]:
    """JSONL (one decision per line) or Avro object container (`.avro`) records as JSON bytes."""
    if path.suffix == ".avro":
        import fastavro

        with open(path, "rb") as handle:
            return [orjson.dumps(record) for record in fastavro.reader(handle)]
    return [line for line in path.read_bytes().splitlines() if line.strip()]
