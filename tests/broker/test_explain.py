"""`execworker explain`: one order's chain from the committed topics, and from an outbox."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from tests.broker.helpers import TestTopics, drain, produce, read_records
from tests.factories import decision_bytes
from worker.cli.main import build_parser
from worker.io.kafka import KafkaConfig


async def explain(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    parsed = build_parser().parse_args(["explain", *args])
    code = int(await parsed.handler(parsed))
    return code, capsys.readouterr().out


async def test_explain_follows_an_order_from_input_to_events(
    kafka: KafkaConfig, topics: TestTopics, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    messages = [
        decision_bytes(signal_row_id="filled", px="64250.123"),
        decision_bytes(signal_row_id="guarded", guard_reason="news_blackout"),
        decision_bytes(signal_row_id="other", side="SELL"),
    ]
    await produce(kafka, topics.name("decisions"), [(b"BTCUSDT", m) for m in messages])
    outbox = tmp_path / "outbox"
    await drain(kafka, topics, outbox)
    events = [orjson.loads(value) for _, _, value in await read_records(kafka, topics.name("exec_events"))]
    by_row = {e["signal_row_id"]: e for e in events}
    common = ("--topics", str(topics.path), "--bootstrap-servers", kafka.bootstrap_servers)

    filled = by_row["filled"]
    code, out = await explain(capsys, filled["client_order_id"], "--json", *common)
    chain = orjson.loads(out)
    assert code == 0 and chain["found"] and chain["final_status"] == filled["status"]
    assert chain["events"] == [e for e in events if e["client_order_id"] == filled["client_order_id"]]
    assert (chain["input"]["topic"], chain["input"]["offset"]) == (topics.name("decisions"), 0)
    assert chain["input"]["command"]["signal_row_id"] == "filled"  # the input message, decoded
    assert chain["input"]["command"]["px"] == "64250.123"
    assert chain["gates"] == {"outcome": "passed", "reason": None, "sent_to_venue": True}
    assert chain["rounding"]["applied"] and chain["rounding"]["px_sent"] == "64250.12"
    assert [step["kind"] for step in chain["venue"]] == ["request", "answer"]
    assert chain["venue"][1]["latency_ms"] == filled["latency_ms"]

    guarded = by_row["guarded"]
    code, out = await explain(capsys, guarded["client_order_id"], "--outbox", str(outbox), *common)
    assert code == 0
    assert "3. gates      denied (guard:news_blackout); never sent" in out
    assert "guard_reason=news_blackout" in out
    assert f"{guarded['client_order_id']}.1  DENIED" in out
    assert "(no request)" in out

    code, out = await explain(capsys, "no-such-order", "--outbox", str(outbox), *common)
    assert code == 1 and "no exec-event found" in out
