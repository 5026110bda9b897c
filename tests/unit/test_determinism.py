"""Code that produces events must not read the wall clock or the global random generator."""

from __future__ import annotations

import datetime as dt
import random
import time
from typing import Any

import orjson
import pytest

from examples.gen_decisions import decisions
from worker.core.backtest import BacktestExecutor
from worker.core.engine import ExecutionEngine
from worker.io.outbox import Outbox
from worker.policy.rng import Rng
from worker.runtime.replay import outbox_sink, replay


class Forbidden(AssertionError):
    pass


def _forbid(name: str) -> Any:
    def call(*args: object, **kwargs: object) -> Any:
        raise Forbidden(f"{name} called while producing events")

    return call


@pytest.fixture
def no_wall_clock_no_global_random(monkeypatch: pytest.MonkeyPatch) -> None:
    # monotonic clocks stay: the event loop schedules with them, and they never reach an event.
    for name in ("time", "time_ns", "localtime", "gmtime", "ctime"):
        monkeypatch.setattr(time, name, _forbid(f"time.{name}"))
    for name in ("random", "randint", "randrange", "uniform", "choice", "shuffle", "getrandbits", "seed"):
        monkeypatch.setattr(random, name, _forbid(f"random.{name}"))

    class FrozenDatetime(dt.datetime):
        @classmethod
        def now(cls, tz: dt.tzinfo | None = None) -> FrozenDatetime:
            raise Forbidden("datetime.now called while producing events")

        @classmethod
        def utcnow(cls) -> FrozenDatetime:
            raise Forbidden("datetime.utcnow called while producing events")

    monkeypatch.setattr(dt, "datetime", FrozenDatetime)


@pytest.mark.usefixtures("no_wall_clock_no_global_random")
async def test_a_backtest_replay_reads_neither_clock_nor_global_random(tmp_path: Any) -> None:
    values = [orjson.dumps(d) for d in decisions(400, seed=61)]
    engine = ExecutionEngine(BacktestExecutor(Rng(3)))
    outbox = Outbox(tmp_path / "out")
    result = await replay(engine, values, [outbox_sink(outbox)])
    outbox.drain("replay")
    assert result.events == 400 and len(list(Outbox(tmp_path / "out").iter_lines())) == 400
    again = await replay(ExecutionEngine(BacktestExecutor(Rng(3))), values)
    assert again.digest == result.digest


def test_the_guard_itself_catches_a_clock_read(no_wall_clock_no_global_random: None) -> None:
    with pytest.raises(Forbidden):
        time.time()
    with pytest.raises(Forbidden):
        random.random()
