"""Worker settings: every knob in one validated place, with the reason for each default."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from worker.codec.json_codec import DEFAULT_MAX_MESSAGE_BYTES
from worker.contract.enums import ExecutorKind
from worker.io.binance.clock import SAFETY_MS
from worker.io.partitioner import Partitioner


class WorkerSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    bootstrap_servers: str
    topics_file: Path = Path("topics.yaml")
    schemas_dir: Path = Path("schemas")  # Avro topics take their schema ids from here
    group_id: str = Field(default="execworker", min_length=1)
    # Static membership (KIP-345): a restarted worker with the same instance id takes its
    # partitions back at once instead of waiting for a rebalance. One id per replica.
    group_instance_id: str | None = None
    # How long the group waits for a silent member (a killed one) before reassigning its
    # partitions. 10 s is aiokafka's default; the broker refuses values under 6 s.
    session_timeout_ms: int = Field(default=10_000, ge=6_000, le=300_000)
    # Transactional ids are `{prefix}-p{partition}`: one per input partition, stable across
    # restarts, so a restarted or rebalanced owner fences the previous one (aiokafka has no
    # KIP-447 generation fencing; the transactional id is the only fence).
    transactional_prefix: str = Field(default="execworker", min_length=1)
    outbox_dir: Path = Path("var/outbox")
    # A minute file is published to ready/ once its partition's event time is this far past the
    # minute's end (docs/outbox.md); later events of the minute go to a numbered segment.
    outbox_grace_ms: int = Field(default=60_000, ge=0)
    executor: ExecutorKind = ExecutorKind.BACKTEST
    seed: int = 0
    # Records per poll and per transaction (a lane merges polls queued behind its transaction).
    # Larger batches amortise the ~3 broker round trips of a commit;
    # 500 keeps one transaction under ~50 ms of work here while reaching >80% of peak throughput.
    max_batch: int = Field(default=500, ge=1, le=100_000)
    # Commit cadence in time: keep polling into the same batch for up to this long (0 = commit
    # whatever one poll returned). Count cadence is `max_batch`. See docs/operations.md.
    commit_interval_ms: int = Field(default=0, ge=0, le=60_000)
    # How long a poll waits for more input before committing what it has: the latency floor.
    poll_timeout_ms: int = Field(default=100, ge=1, le=60_000)
    # How long the broker may hold a fetch when no data is ready. Kafka's 500 ms default showed
    # up directly in end-to-end latency here (p50 330 ms -> 104 ms at 1,000 msg/s with 20 ms);
    # lower values cost empty fetch round trips without measurable gain.
    fetch_max_wait_ms: int = Field(default=20, ge=1, le=10_000)
    max_message_bytes: int = Field(default=DEFAULT_MAX_MESSAGE_BYTES, ge=256)
    symbols: frozenset[str] | None = None  # allow-list; None accepts every well-formed symbol
    until_drained: bool = False
    # How long a starting worker waits for the broker (a broker restart takes ~10-30 s). Missing
    # topics still fail at once: waiting does not create them.
    broker_wait_s: float = Field(default=60.0, ge=0)
    metrics_port: int = Field(default=9108, ge=0, le=65535)  # 0 = no metrics endpoint
    metrics_host: str = "127.0.0.1"
    # Orders in flight to a venue at once per partition: enough to hide ~10 ms of REST latency,
    # well under a venue's per-10 s order limit.
    venue_concurrency: int = Field(default=16, ge=1, le=1_000)
    # How often resting and unknown-outcome orders are re-checked with the venue.
    reconcile_interval_ms: int = Field(default=1_000, ge=50)
    # Every order request carries this recvWindow, fixed in its committed intent: all copies of
    # it expire at timestamp + recvWindow on the venue's clock, and an unknown outcome is
    # resolved only after that (docs/guarantees.md). Binance's default; its maximum is 60 s.
    # A request is never signed within the clock's safety margin (1 s) of its expiry, so a window
    # at or below it could never be sent at all: every order would end unsent after 3 intents.
    recv_window_ms: int = Field(default=5_000, ge=2 * SAFETY_MS, le=60_000)
    # How inputs are checked for co-partitioning (io/partitioner.py): murmur2 = Kafka's default.
    partitioner: Partitioner = Partitioner.MURMUR2
    # Producer transaction timeout: how long the broker waits before aborting the transaction of
    # a worker that died mid-batch (and so how long its partitions' consumers wait after a kill).
    transaction_timeout_ms: int = Field(default=30_000, ge=1_000)
