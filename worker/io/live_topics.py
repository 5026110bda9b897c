"""Is a topic live output? What `replay --to-topic` checks before it writes anywhere.

Two kinds of evidence, either enough:

- the topics file names the topic as a live role (`exec_events`, `dlq`, `shadow_events`): the
  worker rebuilds its state from these and downstream reads them as real;
- the topic holds committed transactional output. The worker writes only in transactions (its
  events commit together with its input offsets), and every transaction ends in a marker, a
  control record that takes an offset but is never handed to a consumer. A replay writes with an
  idempotent, non-transactional producer and never leaves one. So an offset in a partition's
  recent tail that holds no record is a transaction marker: a transactional writer, that is a
  live worker of some deployment, owns the topic, whatever topics file this replay was given.

Consumer-group offsets cannot tell this: a live group commits offsets on its inputs, not on the
topics it writes. (A compacted topic also has holes; the check then errs on the side of refusing.)
"""

from __future__ import annotations

from dataclasses import dataclass

from worker.io.kafka import KafkaConfig, UnknownTopic, topic_partitions
from worker.io.topics import TopicsFile

LIVE_ROLES = ("exec_events", "dlq", "shadow_events")
# How many of a partition's last offsets are inspected for markers: a live worker commits a
# transaction per batch, so its output has a marker every few hundred records at most.
DEFAULT_TAIL = 2_000


def live_role(topics: TopicsFile, topic: str) -> str | None:
    """The live role the topics file gives `topic` (by name), or None."""
    for role in LIVE_ROLES:
        spec = topics.topics.get(role)
        if spec is not None and spec.name == topic:
            return role
    return None


@dataclass(frozen=True, slots=True)
class Markers:
    partitions: dict[int, int]  # partition -> markers found in its tail
    inspected: int  # offsets inspected, over all partitions

    @property
    def total(self) -> int:
        return sum(self.partitions.values())


async def transaction_markers(config: KafkaConfig, topic: str, tail: int = DEFAULT_TAIL) -> Markers:
    """Transaction markers in the last `tail` offsets of each partition of `topic` (none if absent).

    Reads read_uncommitted, so that records of aborted or open transactions count as records:
    only control records (commit and abort markers) leave an offset empty.
    """
    consumer = config.consumer(group_id=None, isolation_level="read_uncommitted", enable_auto_commit=False)
    await consumer.start()
    try:
        try:
            tps = await topic_partitions(consumer, topic)
        except UnknownTopic:
            return Markers({}, 0)
        consumer.assign(tps)
        # seek_to_beginning before end_offsets: the other order leaves positions at the end.
        await consumer.seek_to_beginning(*tps)
        starts = await consumer.beginning_offsets(tps)
        ends = await consumer.end_offsets(tps)
        seen = {tp: 0 for tp in tps}
        for tp in tps:
            starts[tp] = max(starts[tp], ends[tp] - tail)
            consumer.seek(tp, starts[tp])
        # A position moves past markers without returning them: read until every partition is at
        # its end, counting the records that did come back.
        remaining = {tp for tp in tps if starts[tp] < ends[tp]}
        while remaining:
            batches = await consumer.getmany(*remaining, timeout_ms=1000, max_records=10_000)
            for tp, records in batches.items():
                seen[tp] += sum(1 for r in records if r.offset < ends[tp])
            for tp in list(remaining):
                if await consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
        found = {tp.partition: ends[tp] - starts[tp] - seen[tp] for tp in tps}
        return Markers({p: n for p, n in sorted(found.items()) if n > 0}, sum(ends[tp] - starts[tp] for tp in tps))
    finally:
        await consumer.stop()


async def live_topic_problem(config: KafkaConfig, topics: TopicsFile, topic: str) -> str | None:
    """Why `topic` is live output (a sentence for the operator), or None if it is not."""
    role = live_role(topics, topic)
    if role is not None:
        return (
            f"{topic} is the {role} topic of the topics file: live workers rebuild their state from it "
            "and downstream consumers read it as real orders"
        )
    markers = await transaction_markers(config, topic)
    if markers.total:
        where = ", ".join(str(p) for p in markers.partitions)
        return (
            f"{topic} holds committed transactional output ({markers.total} transaction markers in the "
            f"last {markers.inspected} offsets, partitions {where}): a live worker writes it "
            "(workers write only in transactions, replays never do)"
        )
    return None
