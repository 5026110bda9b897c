"""Replay of every input role from files: `--from-file ROLE=PATH`, the merge order, the policy
effects of signals and control records, bad input; and the committed sample's digest through the
merged path."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from tests.factories import decision_dict
from worker.cli.entry import main
from worker.contract.messages import StrategyModeCommand
from worker.core.backtest import BacktestExecutor
from worker.core.engine import ExecutionEngine
from worker.io.outbox import OutboxLine
from worker.policy.modes import load_modes
from worker.policy.pretrade import PreTradePolicy
from worker.policy.rng import Rng
from worker.runtime.replay import list_sink
from worker.runtime.replay_inputs import InputSelectionError, RawRecord, merge, parse_file_specs, read_files
from worker.runtime.replay_merge import replay_merged

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "examples" / "decisions.jsonl"
SAMPLE_DIGEST = "a6778260b4820ab76fcd7a4c636c93e4ffec136e17e9adee537969f7a6df171f"
T0 = 1_768_388_400_000  # 2026-01-14 11:00 UTC: day in examples/modes.yaml (Europe/Berlin)


def signal(row: str, score: str, at: int, symbol: str = "BTCUSDT", **fields: object) -> dict[str, object]:
    return {
        "signal_row_id": row,
        "ts_ms": at,
        "event_ts_ms": at,
        "symbol": symbol,
        "score": score,
        "regime": "trend",
        "warmup": False,
        "guard_reason": None,
        "consistency": 0.95,
        "weak_signal_throttle": False,
        "gate_reason_stats": {},
        **fields,
    }


def write(path: Path, rows: list[dict[str, object]], extra: bytes = b"") -> Path:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows) + extra)
    return path


def modes_engine() -> ExecutionEngine:
    return ExecutionEngine(
        BacktestExecutor(Rng(0)), policy=PreTradePolicy(load_modes(ROOT / "examples" / "modes.yaml"))
    )


def test_file_specs_bare_paths_roles_and_what_to_fix(tmp_path: Path) -> None:
    path = write(tmp_path / "x.jsonl", [])
    assert parse_file_specs([str(path)]) == {"decisions": path}
    assert parse_file_specs([f"strategy-mode={path}", f"signals={path}"]) == {"strategy_mode": path, "signals": path}
    with pytest.raises(InputSelectionError, match=r"unknown role 'trades'.*decisions, signals, strategy_mode"):
        parse_file_specs([f"trades={path}"])
    with pytest.raises(InputSelectionError, match="no such file"):
        parse_file_specs([f"signals={tmp_path / 'missing.jsonl'}"])
    with pytest.raises(InputSelectionError, match="decisions is given twice"):
        parse_file_specs([str(path), f"decisions={path}"])


def test_merge_order_control_first_then_symbol_role_and_position() -> None:
    at = T0
    records = [
        RawRecord("signals", 0, 0, orjson.dumps(signal("s1", "3", at))),
        RawRecord("decisions", 0, 0, orjson.dumps(decision_dict(signal_row_id="d2", event_ts_ms=at))),
        RawRecord("decisions", 0, 1, orjson.dumps(decision_dict(signal_row_id="d3", event_ts_ms=at))),
        RawRecord("decisions", 0, 2, orjson.dumps(decision_dict(signal_row_id="d1", event_ts_ms=at - 1))),
        RawRecord("decisions", 0, 3, orjson.dumps(decision_dict(signal_row_id="a", event_ts_ms=at, symbol="ADAUSDT"))),
        RawRecord("market", 3, 7, orjson.dumps({"symbol": "BTCUSDT", "event_time_ms": at, "bid": "1", "ask": "2"})),
        RawRecord("strategy_mode", 0, 0, orjson.dumps({"mode": None, "ts_ms": at + 1})),
        RawRecord("decisions", 0, 4, b"not json"),
        RawRecord("market", 0, 1, b"{}"),
    ]
    merged = merge(records)
    names = [getattr(i.message, "signal_row_id", i.role) for i in merged.items]
    assert names == ["d1", "market", "a", "d2", "d3", "s1", "strategy_mode"]
    assert [type(i.message) for i in merged.items][-1] is StrategyModeCommand
    assert merged.rejected == {"json": 1} and merged.ignored == {"market": 1}
    assert merged.inputs == 5


async def test_decisions_through_the_merged_path_keep_the_committed_sample_digest() -> None:
    lines: list[OutboxLine] = []
    result = await replay_merged(
        ExecutionEngine(BacktestExecutor(Rng(0))), merge(read_files({"decisions": SAMPLE})), [list_sink(lines)]
    )
    assert result.digest == SAMPLE_DIGEST
    assert result.decisions == len(lines) == 3000


async def test_signals_modes_and_market_from_files_apply_as_live(tmp_path: Path) -> None:
    # A market burst at T0+1000 (12/s) turns the trigger on: storm (Z 3.5, 0.002 per order).
    burst = [
        {"symbol": "BTCUSDT", "event_time_ms": T0 + 1_000 + 50 * i, "bid": "64249", "ask": "64250"} for i in range(12)
    ]
    files = {
        "signals": write(
            tmp_path / "signals.jsonl",
            [
                signal("s-day", "2.4", T0),
                signal("s-storm-low", "2.4", T0 + 2_000),
                signal("s-storm", "-3.6", T0 + 2_000),
                signal("s-nogrid", "9", T0, symbol="ADAUSDT"),
            ],
            extra=b'{"broken": \n',
        ),
        "market": write(tmp_path / "market.jsonl", burst),
        "decisions": write(
            tmp_path / "decisions.jsonl", [decision_dict(signal_row_id="d", event_ts_ms=T0 + 2_000, ts_ms=T0 + 2_000)]
        ),
    }
    lines: list[OutboxLine] = []
    result = await replay_merged(modes_engine(), merge(read_files(files)), [list_sink(lines)])
    events = {e["signal_row_id"]: e for e in (orjson.loads(line.payload) for line in lines)}
    assert set(events) == {"s-day", "s-storm", "d"}
    assert (events["s-day"]["mode"], events["s-day"]["qty"], events["s-day"]["side"]) == ("day", "0.01000", "BUY")
    assert (events["s-storm"]["mode"], events["s-storm"]["qty"], events["s-storm"]["side"]) == (
        "storm",
        "0.002",
        "SELL",
    )
    assert events["d"]["mode"] == "storm"
    assert result.dropped == {"signal_no_action": 1}
    assert result.rejected == {"config": 1, "json": 1}  # no grid for ADAUSDT; the broken line
    assert result.control == {"market": 12}


async def test_an_explicit_mode_applies_from_its_time_and_an_unknown_one_is_ignored(tmp_path: Path) -> None:
    files = {
        "strategy_mode": write(
            tmp_path / "modes.jsonl",
            [{"mode": "night", "ts_ms": T0 + 1_000, "reason": "desk"}, {"mode": "nope", "ts_ms": T0 + 1_500}],
        ),
        "decisions": write(
            tmp_path / "d.jsonl",
            [decision_dict(signal_row_id=f"d{n}", event_ts_ms=T0 + n * 1_000) for n in range(3)],
        ),
    }
    lines: list[OutboxLine] = []
    result = await replay_merged(modes_engine(), merge(read_files(files)), [list_sink(lines)])
    assert [orjson.loads(line.payload)["mode"] for line in lines] == ["day", "night", "night"]
    assert result.control == {"strategy_mode": 1} and result.ignored == {"strategy_mode": 1}


def test_cli_from_file_roles(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    signals = write(tmp_path / "signals.jsonl", [signal("s1", "2.4", T0)])
    assert main(["replay", "--from-file", f"decisions={SAMPLE}"]) == 0
    assert capsys.readouterr().out.strip().endswith(f"sha256:{SAMPLE_DIGEST}")
    modes = str(ROOT / "examples" / "modes.yaml")
    assert main(["replay", "--from-file", str(SAMPLE), "--from-file", f"signals={signals}", "--modes", modes]) == 0
    out = capsys.readouterr().out
    assert "replayed 3001 inputs (3000 decisions, 1 signals) -> 3001 exec-events" in out
    assert main(["replay", "--from-file", f"signal={signals}"]) == 2
    assert "--from-file signal=" in capsys.readouterr().err
    assert main(["replay", "--from-file", f"signals={tmp_path / 'none.jsonl'}"]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["replay", "--from-topics", "--range", "0:1-2"]) == 2
    assert "--range applies to --from-topic only" in capsys.readouterr().err
