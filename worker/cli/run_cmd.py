"""`execworker run`: join the consumer group and execute decisions until stopped (or drained)."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time
from pathlib import Path

from pydantic import ValidationError

from worker.cli.common import UsageError, add_kafka_options, topics_for
from worker.cli.logformat import LOG_FORMAT_ENV, LOG_FORMATS
from worker.cli.run_config import (
    ConfigError,
    RunConfig,
    add_config_option,
    given_flags,
    load_run_config,
    suppress_defaults,
)
from worker.contract.enums import ExecutorKind
from worker.contract.executor import IExecutor
from worker.core.backtest import BacktestExecutor
from worker.core.engine import EngineConfig, ExecutionEngine
from worker.core.fills import fill_model
from worker.core.live_market import LiveMarketView
from worker.core.venue_filters import GridPolicy, VenueFiltersError
from worker.io.binance.client import BinanceClient, VenueCredentials
from worker.io.binance.executor import BinanceExecutor
from worker.io.partitioner import Partitioner
from worker.io.topics import TopicsFile, codec_for
from worker.policy.modes import ModesConfigError, load_modes
from worker.policy.pretrade import PreTradePolicy
from worker.policy.rng import Rng
from worker.runtime.orderlog import DEFAULT_SAMPLE_PASS, OrderLog
from worker.runtime.settings import WorkerSettings
from worker.runtime.shadow import (
    SHADOW_ROLE,
    ShadowDriver,
    ShadowSpec,
    ShadowSpecError,
    VenueShadow,
    attach,
    parse_shadow_spec,
)
from worker.runtime.worker import ExecWorker, TakeoverFailed
from worker.sandbox.server import DEFAULT_API_KEY, DEFAULT_API_SECRET

DEFAULT_SANDBOX_URL = "http://127.0.0.1:8765"
AVAILABLE_EXECUTORS = (ExecutorKind.BACKTEST, ExecutorKind.SANDBOX, ExecutorKind.BINANCE)
API_KEY_ENV = "EXECWORKER_API_KEY"
API_SECRET_ENV = "EXECWORKER_API_SECRET"
API_SECRET_FILE_ENV = "EXECWORKER_API_SECRET_FILE"
SHADOW_API_KEY_ENV = "EXECWORKER_SHADOW_API_KEY"
SHADOW_API_SECRET_ENV = "EXECWORKER_SHADOW_API_SECRET"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    run = sub.add_parser("run", help="consume decisions and execute them (the worker)")
    add_run_options(run)
    run.set_defaults(handler=run_worker)


def add_run_options(run: argparse.ArgumentParser) -> None:
    """The run settings as flags (also `config show`'s). Each is also `EXECWORKER_<NAME>` or a key
    of `--config FILE` (worker/cli/run_config.py): the defaults here are RunConfig's, and a flag
    counts only when given (suppress_defaults)."""
    add_kafka_options(run)
    add_config_option(run)
    run.add_argument("--group", default="execworker", help="consumer group id")
    run.add_argument("--transactional-prefix", help="transactional id prefix (default: the group)")
    run.add_argument("--instance-id", help="static group membership id (one per replica; optional)")
    run.add_argument("--session-timeout-ms", type=int, default=10_000, help="group session timeout")
    run.add_argument(
        "--recv-window-ms",
        type=int,
        default=5_000,
        help="recvWindow of every order request; an unknown outcome is resolved after it expires",
    )
    run.add_argument(
        "--input-partitioner",
        choices=[p.value for p in Partitioner],
        default=Partitioner.MURMUR2.value,
        help="how producers key inputs to partitions (murmur2 = Kafka default, crc32 = librdkafka's "
        "consistent); a misrouted input goes to the DLQ; off = trust the producers",
    )
    run.add_argument("--outbox", type=Path, default=Path("var/outbox"), help="outbox root directory")
    run.add_argument(
        "--outbox-grace-ms",
        type=int,
        default=60_000,
        help="publish a minute file once event time is this far past the minute (docs/outbox.md)",
    )
    run.add_argument(
        "--executor",
        default=ExecutorKind.BACKTEST.value,
        help=f"executor: {', '.join(e.value for e in AVAILABLE_EXECUTORS)}",
    )
    run.add_argument("--seed", type=int, default=0, help="seed of the simulated latency model")
    run.add_argument("--modes", type=Path, help="strategy modes file (examples/modes.yaml); default: one mode")
    run.add_argument(
        "--venue-url",
        help="venue base URL for --executor sandbox|binance (sandbox default: http://127.0.0.1:8765)",
    )
    run.add_argument("--venue-timeout-s", type=float, default=2.0, help="per-request venue timeout")
    run.add_argument(
        "--venue-grid",
        choices=["deny", "venue", "off"],
        default="deny",
        help="a decision whose tick/step/min notional the venue's exchangeInfo filters refuse: "
        "deny it with the reason, move it onto the venue's grid, or trust it (off)",
    )
    run.add_argument("--reconcile-interval-ms", type=int, default=1000, help="re-check open orders this often")
    run.add_argument(
        "--max-batch",
        type=int,
        default=500,
        help="records per poll and per transaction (a partition merges the polls queued behind its transaction)",
    )
    run.add_argument("--poll-timeout-ms", type=int, default=100, help="max wait for input per poll")
    run.add_argument(
        "--commit-interval-ms", type=int, default=0, help="gather a batch for up to this long (0 = one poll)"
    )
    run.add_argument("--symbols", help="comma-separated allow-list; other symbols go to the DLQ")
    run.add_argument("--until-drained", action="store_true", help="exit once all input is processed")
    run.add_argument(
        "--broker-wait-s",
        type=float,
        default=60.0,
        help="wait this long for a restarting broker or venue (at start, in a takeover); 0 = fail at once",
    )
    run.add_argument("--metrics-port", type=int, default=9108, help="Prometheus port (0 = off)")
    run.add_argument("--metrics-host", default="127.0.0.1", help="address the metrics endpoint binds")
    run.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default=argparse.SUPPRESS,
        help=f"log lines as text or JSON objects (default: ${LOG_FORMAT_ENV}, else text)",
    )
    run.add_argument(
        "--log-sample-pass",
        type=float,
        default=DEFAULT_SAMPLE_PASS,
        help="share of passed orders given an order log line (failures: all); by client order id hash",
    )
    run.add_argument(
        "--shadow",
        help="run a shadow executor beside the primary and compare their answers: backtest:MODEL "
        "(a fill model, on market.v1) or venue:URL; events to the shadow_events topic (docs/operations.md)",
    )
    run.add_argument(
        "--shadow-timeout-s", type=float, default=0.5, help="the most the shadow may add to a batch's send"
    )
    suppress_defaults(run)


def config_from(args: argparse.Namespace) -> RunConfig:
    """The effective run settings: flags given, then EXECWORKER_* env, then --config, then defaults."""
    try:
        return load_run_config(given_flags(args), args.config)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None


def settings_from(config: RunConfig) -> WorkerSettings:
    if config.executor not in {e.value for e in AVAILABLE_EXECUTORS}:
        raise UsageError(
            f"--executor {config.executor}: not available; choose one of "
            f"{', '.join(e.value for e in AVAILABLE_EXECUTORS)}"
        )
    symbols = None
    if config.symbols:
        symbols = frozenset(s.strip() for s in config.symbols.split(",") if s.strip())
    try:
        partitioner = Partitioner(config.input_partitioner)
    except ValueError:
        raise UsageError(
            f"--input-partitioner {config.input_partitioner}: choose one of {', '.join(p.value for p in Partitioner)}"
        ) from None
    try:
        return WorkerSettings(
            bootstrap_servers=config.bootstrap_servers,
            topics_file=config.topics,
            schemas_dir=config.schemas_dir,
            group_id=config.group,
            transactional_prefix=config.transactional_prefix or config.group,
            outbox_dir=config.outbox,
            outbox_grace_ms=config.outbox_grace_ms,
            executor=ExecutorKind(config.executor),
            seed=config.seed,
            max_batch=config.max_batch,
            poll_timeout_ms=config.poll_timeout_ms,
            commit_interval_ms=config.commit_interval_ms,
            symbols=symbols,
            until_drained=config.until_drained,
            broker_wait_s=config.broker_wait_s,
            metrics_port=config.metrics_port,
            metrics_host=config.metrics_host,
            reconcile_interval_ms=config.reconcile_interval_ms,
            group_instance_id=config.instance_id,
            session_timeout_ms=config.session_timeout_ms,
            recv_window_ms=config.recv_window_ms,
            partitioner=partitioner,
        )
    except ValidationError as exc:
        raise UsageError(f"invalid option: {exc}") from None


def credentials_from_env(kind: ExecutorKind) -> VenueCredentials:
    """Keys from the environment (or a secret file); documented defaults only for the sandbox."""
    key = os.environ.get(API_KEY_ENV)
    secret = os.environ.get(API_SECRET_ENV)
    secret_file = os.environ.get(API_SECRET_FILE_ENV)
    if secret is None and secret_file:
        try:
            secret = Path(secret_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise UsageError(f"${API_SECRET_FILE_ENV}: cannot read the secret file ({exc.strerror})") from None
    if key and secret:
        return VenueCredentials(key, secret)
    if kind is ExecutorKind.SANDBOX:
        return VenueCredentials(DEFAULT_API_KEY, DEFAULT_API_SECRET)
    raise UsageError(f"--executor {kind.value} needs ${API_KEY_ENV} and ${API_SECRET_ENV} (or ${API_SECRET_FILE_ENV})")


def executor_from(config: RunConfig, settings: WorkerSettings) -> IExecutor:
    if settings.executor is ExecutorKind.BACKTEST:
        return BacktestExecutor(Rng(settings.seed))
    url = config.venue_url or (DEFAULT_SANDBOX_URL if settings.executor is ExecutorKind.SANDBOX else None)
    if not url:
        raise UsageError("--executor binance needs --venue-url (e.g. the Binance spot testnet's REST URL)")
    client = BinanceClient(
        url,
        credentials_from_env(settings.executor),
        timeout_s=config.venue_timeout_s,
        recv_window_ms=settings.recv_window_ms,
    )
    return BinanceExecutor(client, venue_name=settings.executor.value)


def engine_from(config: RunConfig, settings: WorkerSettings) -> ExecutionEngine:
    # A live venue's engine stamps intents with that venue's clock; backtests read no clock.
    executor = executor_from(config, settings)
    grid = None if config.venue_grid == "off" or not executor.requires_intent else GridPolicy(config.venue_grid)
    return ExecutionEngine(executor, EngineConfig(venue_grid=grid), policy=policy_for(config.modes))


def policy_from(args: argparse.Namespace) -> PreTradePolicy:
    return policy_for(args.modes)


def policy_for(modes: Path | None) -> PreTradePolicy:
    if modes is None:
        return PreTradePolicy.default()
    try:
        return PreTradePolicy(load_modes(modes))
    except ModesConfigError as exc:
        raise UsageError(str(exc)) from None


def shadow_credentials() -> VenueCredentials:
    """A venue shadow's own keys (never the primary's): $EXECWORKER_SHADOW_API_KEY and
    $EXECWORKER_SHADOW_API_SECRET, else the sandbox's documented keys."""
    key, secret = os.environ.get(SHADOW_API_KEY_ENV), os.environ.get(SHADOW_API_SECRET_ENV)
    if key and secret:
        return VenueCredentials(key, secret)
    return VenueCredentials(DEFAULT_API_KEY, DEFAULT_API_SECRET)


def shadow_spec_from(config: RunConfig, topics: TopicsFile) -> ShadowSpec | None:
    """`--shadow SPEC`, checked before anything starts: exit 2 with what to fix."""
    if config.shadow is None:
        return None
    try:
        spec = parse_shadow_spec(config.shadow)
    except ShadowSpecError as exc:
        raise UsageError(str(exc)) from None
    if SHADOW_ROLE not in topics.topics:
        raise UsageError(
            f"--shadow needs the `{SHADOW_ROLE}` role in {config.topics} (exec-shadow.v1 in the shipped "
            "topics.yaml), then `execworker topics apply`"
        )
    if config.shadow_timeout_s <= 0:
        raise UsageError(f"--shadow-timeout-s {config.shadow_timeout_s}: a time in seconds above 0")
    return spec


def shadow_from(
    config: RunConfig, settings: WorkerSettings, topics: TopicsFile, worker: ExecWorker, spec: ShadowSpec | None
) -> ShadowDriver | None:
    """The shadow: its own engine and executor, wired into the worker (runtime/shadow.py)."""
    if spec is None:
        return None
    market: LiveMarketView | None = None
    executor: IExecutor
    if spec.kind == "backtest":
        market = LiveMarketView()
        executor = BacktestExecutor(Rng(settings.seed), fills=fill_model(spec.target), market=market)
    else:
        client = BinanceClient(
            spec.target,
            shadow_credentials(),
            timeout_s=min(config.venue_timeout_s, config.shadow_timeout_s),
            recv_window_ms=settings.recv_window_ms,
        )
        executor = VenueShadow(BinanceExecutor(client, max_tries=1, venue_name=ExecutorKind.SHADOW.value))
    role = topics.role(SHADOW_ROLE)
    driver = ShadowDriver(
        ExecutionEngine(executor),
        worker.metrics,
        (role.name, codec_for(role, settings.schemas_dir)),
        timeout_s=config.shadow_timeout_s,
    )
    attach(worker, driver, market)
    return driver


async def run_worker(args: argparse.Namespace) -> int:
    config = config_from(args)
    settings = settings_from(config)
    topics = topics_for(config.topics)
    engine = engine_from(config, settings)
    shadow_spec = shadow_spec_from(config, topics)
    if not 0 <= config.log_sample_pass <= 1:
        raise UsageError(f"--log-sample-pass {config.log_sample_pass}: a share within 0..1 (0.01 = 1%)")
    try:
        worker = ExecWorker(settings, topics, engine, order_log=OrderLog(config.log_sample_pass))
    except OSError as exc:
        raise UsageError(f"--outbox {settings.outbox_dir}: cannot use it ({exc.strerror})") from None
    worker.summary.rules = engine.policy.rules_overview()
    shadow = shadow_from(config, settings, topics, worker, shadow_spec)
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
    if shadow is not None:
        await shadow.start()
    try:
        summary = await worker.run()
    except TakeoverFailed as exc:
        print(f"execworker run: {exc}; exiting so that a supervisor restarts the worker", file=sys.stderr)
        return 3
    except VenueFiltersError as exc:
        print(f"execworker run: {exc}", file=sys.stderr)
        return 3
    finally:
        if shadow is not None:
            await shadow.close()
    elapsed = time.monotonic() - started
    print(summary.render(elapsed, str(settings.outbox_dir), metrics_url))
    return 0
