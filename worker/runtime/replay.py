"""Deterministic replay: the same decisions give the same exec-events, byte for byte, whether they
come from a file or a topic, from one partition or many, in one run or the next.

Canonical order (what makes partitioning irrelevant): decisions are sorted by
(`event_ts_ms`, `symbol`, position of the decision among its symbol's decisions in the input).
Keyed partitioning keeps each symbol's decisions in order, so that key is the same for a file
and for a topic with any number of partitions. The n-th decision in that order carries the
source coordinates (`replay`, 0, n) in its events. Time is sim-time (`event_ts_ms`); randomness
is the seeded, per-order `Rng`. The digest is SHA-256 over the canonical exec-event lines, each
followed by a newline, in canonical order.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from worker.codec.errors import DecodeError
from worker.codec.json_codec import decode_json, encode_json
from worker.contract.events import ExecEvent
from worker.contract.messages import Decision
from worker.contract.orders import SourceRef
from worker.execution.engine import ExecutionEngine
from worker.execution.order_state import OrderBook
from worker.io.outbox import Outbox, OutboxLine

REPLAY_SOURCE = "replay"
# Outbox lines published per call: large enough to amortise file rewrites.
_PUBLISH_CHUNK = 20_000


@dataclass(repr=False)
class ReplayResult:
    decisions: int = 0
    events: list[ExecEvent] = field(default_factory=list)
    lines: list[bytes] = field(default_factory=list)
    rejected: Counter[str] = field(default_factory=Counter)  # undecodable input, by error class
    digest: str = ""

    def __repr__(self) -> str:
        # Short on purpose: asyncio may repr a finished task's result (Python 3.11 does so while
        # restoring signal handlers), and a full repr of every event costs seconds on big replays.
        return f"ReplayResult(decisions={self.decisions}, events={len(self.events)}, digest={self.digest[:12]})"


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


async def replay(engine: ExecutionEngine, values: Iterable[bytes], out_dir: Path | None = None) -> ReplayResult:
    decisions, rejected = canonical_order(values)
    result = ReplayResult(decisions=len(decisions), rejected=rejected)
    book = OrderBook()
    digest = hashlib.sha256()
    for index, decision in enumerate(decisions):
        source = SourceRef(topic=REPLAY_SOURCE, partition=0, offset=index)
        outcome = await engine.handle(book, decision, source)
        for event in outcome.events:
            line = encode_json(event)
            digest.update(line + b"\n")
            result.events.append(event)
            result.lines.append(line)
    book.commit()
    result.digest = digest.hexdigest()
    if out_dir is not None:
        outbox = Outbox(out_dir)
        pending = [
            OutboxLine(e.symbol, e.event_ts_ms, e.event_id, line)
            for e, line in zip(result.events, result.lines, strict=True)
        ]
        for start in range(0, len(pending), _PUBLISH_CHUNK):
            outbox.publish(pending[start : start + _PUBLISH_CHUNK])
    return result


def read_input_file(path: Path) -> list[bytes]:
    """JSONL (one decision per line) or Avro object container (`.avro`) records as JSON bytes."""
    if path.suffix == ".avro":
        import fastavro

        with open(path, "rb") as handle:
            return [orjson.dumps(record) for record in fastavro.reader(handle)]
    return [line for line in path.read_bytes().splitlines() if line.strip()]
