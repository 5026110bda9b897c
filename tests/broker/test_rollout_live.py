"""Rollout rules live and in replay: a worker with rules in `observe` commits exactly the events a
replay of the same input with the same modes file makes, with the same `observed` lists, and its
summary and metrics count what the observed rules would have stopped."""

from __future__ import annotations

import re
import subprocess
from collections import Counter
from pathlib import Path

import orjson

from examples.gen_decisions import decisions
from tests.broker.conftest import TopicsFactory
from tests.broker.helpers import ROOT, cli, make_worker, produce, read_records
from worker.core.backtest import BacktestExecutor
from worker.core.engine import ExecutionEngine
from worker.io.kafka import KafkaConfig
from worker.policy.modes import load_modes
from worker.policy.pretrade import PreTradePolicy
from worker.policy.rng import Rng

RULES = """
rules:
  warmup: observe
  guard: observe
  "guard:vol_spike": enforce
  weak_signal: off
  low_consistency: observe
  rate_wall: observe
  adaptive_throttle: observe
"""


def without_source(value: bytes) -> bytes:
    event = orjson.loads(value)
    del event["source"]  # where the input was read: the only field that differs by construction
    return orjson.dumps(event, option=orjson.OPT_SORT_KEYS)


def first_events_observed(values: list[bytes]) -> Counter[str]:
    """Per rule: orders whose first event lists it."""
    counts: Counter[str] = Counter()
    for value in values:
        event = orjson.loads(value)
        if event.get("observed") and event["event_id"].endswith(".1"):
            counts.update(event["observed"])
    return counts


async def test_a_live_worker_with_rules_in_observe_emits_exactly_the_replays_events(
    kafka: KafkaConfig, topics_factory: TopicsFactory, tmp_path: Path
) -> None:
    modes = tmp_path / "modes.yaml"
    modes.write_text((ROOT / "examples" / "modes.yaml").read_text(encoding="utf-8") + RULES, encoding="utf-8")
    rows = list(decisions(800, seed=91))
    # One partition, input in canonical order: the live worker meets orders in the replay's order,
    # so the rate wall (one per process) sees the same sequence.
    rows.sort(key=lambda r: (r["event_ts_ms"], r["symbol"]))
    values = [orjson.dumps(r) for r in rows]
    sample = tmp_path / "decisions.jsonl"
    sample.write_bytes(b"\n".join(values) + b"\n")
    topics = await topics_factory(partitions=1)
    await produce(
        kafka, topics.name("decisions"), [(r["symbol"].encode(), v) for r, v in zip(rows, values, strict=True)]
    )

    engine = ExecutionEngine(BacktestExecutor(Rng(0)), policy=PreTradePolicy(load_modes(modes)))
    worker = make_worker(kafka, topics, tmp_path / "outbox", engine=engine, max_batch=100)
    worker.summary.rules = engine.policy.rules_overview()
    summary = await worker.run()
    live = [value for _, _, value in await read_records(kafka, topics.name("exec_events"))]

    replayed = subprocess.run(
        cli("replay", "--from-file", str(sample), "--modes", str(modes), "--out", str(tmp_path / "replay")),
        cwd=ROOT,
        capture_output=True,
        timeout=300,
        text=True,
    )
    assert replayed.returncode == 0, replayed.stderr
    lines = [
        line
        for path in sorted((tmp_path / "replay" / "ready").rglob("*.jsonl"))
        for line in path.read_bytes().splitlines()
    ]
    assert len(live) == len(lines) == len(values)
    assert sorted(map(without_source, live)) == sorted(map(without_source, lines))

    observed = first_events_observed(live)
    assert {"warmup", "guard", "low_consistency"} <= set(observed)
    assert "weak_signal" not in observed  # off: nothing recorded
    assert summary.observed == observed
    for rule, count in observed.items():
        assert re.search(rf"^    {rule}\s+{count}$", replayed.stdout, re.MULTILINE), replayed.stdout
        outcome = "DENIED" if rule in ("warmup", "guard") else "THROTTLED"
        value = worker.metrics.registry.get_sample_value(
            "executor_rule_observed_total", {"rule": rule, "outcome": outcome}
        )
        assert value == count
    # guard:vol_spike stays enforced while every other guard reason is observed.
    reasons = Counter(orjson.loads(v)["reason"] for v in live)
    assert reasons["guard:vol_spike"] > 0 and not any(
        r.startswith("guard:") and r != "guard:vol_spike" for r in reasons if r
    )
    text = summary.render(1.0, str(tmp_path / "outbox"), None)
    assert "rules (enforce | observe | off)" in text and "guard:vol_spike=enforce" in text
    assert "observed: orders that went ahead" in text
