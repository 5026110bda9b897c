"""`execworker run`: join the consumer group and execute decisions until stopped (or drained)."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import time
from pathlib import Path

from pydantic import ValidationError

from worker.cli.common import UsageError, add_kafka_options, kafka_from, topics_from
from worker.contract.enums import ExecutorKind
from worker.execution.backtest import BacktestExecutor
from worker.execution.engine import ExecutionEngine
from worker.policy.rng import Rng
from worker.runtime.settings import WorkerSettings
from worker.runtime.worker import ExecWorker

AVAILABLE_EXECUTORS = (ExecutorKind.BACKTEST,)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    run = sub.add_parser("run", help="consume decisions and execute them (the worker)")
    add_kafka_options(run)
    run.add_argument("--group", default="execworker", help="consumer group id")
    run.add_argument("--transactional-prefix", help="transactional id prefix (default: the group)")
    run.add_argument("--outbox", type=Path, default=Path("var/outbox"), help="outbox root directory")
    run.add_argument(
        "--executor",
        default=ExecutorKind.BACKTEST.value,
        help=f"executor: {', '.join(e.value for e in AVAILABLE_EXECUTORS)}",
    )
    run.add_argument("--seed", type=int, default=0, help="seed of the simulated latency model")
    run.add_argument("--max-batch", type=int, default=500, help="records per transaction")
    run.add_argument("--poll-timeout-ms", type=int, default=100, help="max wait for input per poll")
    run.add_argument("--symbols", help="comma-separated allow-list; other symbols go to the DLQ")
    run.add_argument("--until-drained", action="store_true", help="exit once all input is processed")
    run.add_argument("--metrics-port", type=int, default=9108, help="Prometheus port (0 = off)")
    run.add_argument(
        "--metrics-host",
        default=os.environ.get("EXECWORKER_METRICS_HOST", "127.0.0.1"),
        help="address the metrics endpoint binds (default: $EXECWORKER_METRICS_HOST, else 127.0.0.1)",
    )
    run.set_defaults(handler=run_worker)


def settings_from(args: argparse.Namespace) -> WorkerSettings:
    if args.executor not in {e.value for e in AVAILABLE_EXECUTORS}:
        raise UsageError(
            f"--executor {args.executor}: not available; choose one of "
            f"{', '.join(e.value for e in AVAILABLE_EXECUTORS)}"
        )
    symbols = None
    if args.symbols:
        symbols = frozenset(s.strip() for s in args.symbols.split(",") if s.strip())
    try:
        return WorkerSettings(
            bootstrap_servers=kafka_from(args).bootstrap_servers,
            topics_file=args.topics,
            schemas_dir=args.schemas_dir,
            group_id=args.group,
            transactional_prefix=args.transactional_prefix or args.group,
            outbox_dir=args.outbox,
            executor=ExecutorKind(args.executor),
            seed=args.seed,
            max_batch=args.max_batch,
            poll_timeout_ms=args.poll_timeout_ms,
            symbols=symbols,
            until_drained=args.until_drained,
            metrics_port=args.metrics_port,
            metrics_host=args.metrics_host,
        )
    except ValidationError as exc:
        raise UsageError(f"invalid option: {exc}") from None


async def run_worker(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    topics = topics_from(args)
    engine = ExecutionEngine(BacktestExecutor(Rng(settings.seed)))
    worker = ExecWorker(settings, topics, engine)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, worker.request_stop)
    metrics_url = None
    if settings.metrics_port:
        try:
            worker.metrics.serve(settings.metrics_port, settings.metrics_host)
        except OSError as exc:
            raise UsageError(
                f"--metrics-port {settings.metrics_port}: cannot listen ({exc}); pick another port or 0"
            ) from None
        metrics_url = f"http://{settings.metrics_host}:{settings.metrics_port}/metrics"
    started = time.monotonic()
    summary = await worker.run()
    elapsed = time.monotonic() - started
    print(summary.render(elapsed, str(settings.outbox_dir), metrics_url))
    return 0
