"""Issue 14 item 3 end to end: `execworker run --executor sandbox` (a real process, the real
broker, the sandbox exchange over real HTTP) against `execworker replay` of the same decisions,
compared by `execworker diff`, read from the live outbox and from the live exec-events topic;
`--fit`'s printed flags re-run the replay; `report --diff-against` adds the section to the page.

Besides the sample decisions, three are made to differ for a known cause:
  * a BUY on a finer tick than the venue's: live re-grids it (`--venue-grid venue`), so another
    price and client_order_id for the same decision -> `rounding`;
  * a min notional below the venue's: live re-grids it to the venue's 5 USDT and denies the
    3 USDT order, the replay fills it -> `gate_or_mode`;
  * a MARKET order of ~1.3 USDT: no local check can price it, the venue rejects it (NOTIONAL)
    -> `venue_reject`.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import subprocess
import uuid
from pathlib import Path

import orjson
from aiohttp import web

from examples.gen_decisions import decisions, market_snapshots
from tests.broker.helpers import ROOT, TestTopics, cli, produce, run_command
from tests.factories import decision_dict
from worker.io.kafka import KafkaConfig
from worker.sandbox.faults import FaultPlan
from worker.sandbox.limits import Limits
from worker.sandbox.matching import DEFAULT_SYMBOLS, Market
from worker.sandbox.server import SandboxExchange

T0 = 1_767_225_600_000


def crafted() -> list[dict[str, object]]:
    base = {"ts_ms": T0 + 10, "event_ts_ms": T0, "symbol": "BTCUSDT", "consistency": 0.95, "regime": "trend"}
    return [
        decision_dict(**base, signal_row_id="x-rounding", tick_size="0.001", px="64250.1234", qty="0.001"),
        decision_dict(**base, signal_row_id="x-gate", min_notional="1", px="60000", qty="0.00005"),
        decision_dict(
            **base, signal_row_id="x-reject", px=None, order_type="MARKET", tif="IOC", qty="0.00002", min_notional="1"
        ),
    ]


async def run(*args: str) -> subprocess.CompletedProcess[str]:
    """A CLI process, awaited off the event loop (the sandbox in this process keeps answering)."""
    return await asyncio.to_thread(subprocess.run, cli(*args), cwd=ROOT, capture_output=True, text=True, timeout=300)


async def test_diff_of_a_sandbox_run_against_its_replay(kafka: KafkaConfig, topics: TestTopics, tmp_path: Path) -> None:
    rows = [*decisions(300, 17), *crafted()]
    decisions_file, market_file = tmp_path / "decisions.jsonl", tmp_path / "market.jsonl"
    decisions_file.write_bytes(b"".join(orjson.dumps(row) + b"\n" for row in rows))
    market_file.write_bytes(b"".join(orjson.dumps(snap) + b"\n" for snap in market_snapshots(rows[:300], 17)))
    await produce(kafka, topics.name("decisions"), [(str(row["symbol"]).encode(), orjson.dumps(row)) for row in rows])

    exchange = SandboxExchange(
        Market(DEFAULT_SYMBOLS, random.Random(0)), FaultPlan.parse(None), 0, limits=Limits.unlimited()
    )
    runner = web.AppRunner(exchange.app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    live_dir, replay_dir = tmp_path / "live", tmp_path / "replay"
    try:
        command = run_command(topics, kafka, f"g-{uuid.uuid4().hex[:8]}", live_dir)
        command += ["--executor", "sandbox", "--venue-url", url, "--venue-grid", "venue", "--until-drained"]
        worker = await asyncio.to_thread(subprocess.run, command, cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert worker.returncode == 0, worker.stderr[-3000:]
    finally:
        await runner.cleanup()
    market = ("--market", str(market_file))
    replay = await run(
        "replay", "--from-file", str(decisions_file), *market, "--fill-model", "quote", "--out", str(replay_dir)
    )
    assert replay.returncode == 0, replay.stderr

    kafka_flags = ("--bootstrap-servers", kafka.bootstrap_servers, "--topics", str(topics.path))
    diff = await run(
        "diff", "--live", str(live_dir), "--replay", str(replay_dir), "--json", "-", "--fit", "--fit-min-orders", "5"
    )
    assert diff.returncode == 0, diff.stderr
    result = json.loads(diff.stdout)
    summary, orders = result["summary"], result["orders"]
    assert summary["orders"] == len(orders) == len(rows)  # one row per decision here: every one made an order
    assert sum(summary["by_cause"].values()) == len(rows)
    by_row = {order["signal_row_id"]: order for order in orders}
    assert by_row["x-rounding"]["cause"] == "rounding"
    assert by_row["x-gate"]["cause"] == "gate_or_mode"
    assert by_row["x-gate"]["live_status"] == "DENIED" and by_row["x-gate"]["replay_status"] != "DENIED"
    assert by_row["x-reject"]["cause"] == "venue_reject"
    assert by_row["x-reject"]["live_status"] == "REJECTED", by_row["x-reject"]
    # The sandbox fills at its own quotes, the backtest at the sample market's: fill-model error.
    assert summary["by_cause"]["fill_model"] > 0
    assert summary["px_diff_bps"]["n"] > 0
    assert [o["client_order_id"] for o in orders] == sorted(o["client_order_id"] for o in orders)
    # The regimes and the market came from the replay's own inputs (its run.json).
    assert {o["regime"] for o in orders} >= {"trend"}
    assert "decisions" in summary and "market" in summary

    # The same diff with the live side read from the exec-events topic (all partitions, from 0).
    topic = topics.name("exec_events")
    ranges = ",".join(f"{p}:0-" for p in range(topics.file.role("exec_events").partitions))
    from_topic = await run(
        "diff", "--live", f"topic:{topic}@{ranges}", "--replay", str(replay_dir), "--json", "-", *kafka_flags
    )
    assert from_topic.returncode == 0, from_topic.stderr
    assert json.loads(from_topic.stdout)["orders"] == orders

    # --fit printed replay flags; the replay accepts them.
    fitted = re.search(r"replay with: execworker replay \.\.\. --fill-model '([^']+)' --latency (\S+)", diff.stderr)
    assert fitted is not None, diff.stderr
    refit = await run(
        "replay",
        "--from-file",
        str(decisions_file),
        *market,
        "--fill-model",
        fitted.group(1),
        "--latency",
        fitted.group(2),
        "--out",
        str(tmp_path / "refit"),
    )
    assert refit.returncode == 0, refit.stderr
    rediff = await run("diff", "--live", str(live_dir), "--replay", str(tmp_path / "refit"), "--json", "-")
    assert rediff.returncode == 0, rediff.stderr
    # The fitted latency brings the replay's latencies to the live ones (in the median).
    before, after = summary["latency_diff_ms"]["p50"], json.loads(rediff.stdout)["summary"]["latency_diff_ms"]["p50"]
    assert abs(int(after)) < abs(int(before)), (before, after)

    # The text table and the report's section.
    text = await run("diff", "--live", str(live_dir), "--replay", str(replay_dir), "--rows", "5")
    assert text.returncode == 0 and "by cause (precedence order)" in text.stdout
    page = tmp_path / "report.html"
    report = await run(
        "report",
        "--outbox",
        str(live_dir),
        "--html",
        str(page),
        "--diff-against",
        str(replay_dir),
        "--json",
        str(tmp_path / "r.json"),
    )
    assert report.returncode == 0, report.stderr
    html = page.read_text(encoding="utf-8")
    assert "<h2 id='diff'>Live versus replay</h2>" in html and "x-rounding" in html
