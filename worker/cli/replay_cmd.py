"""`execworker replay`: a deterministic backtest from a file or a topic; prints `sha256:<hex>` last."""

from __future__ import annotations

import argparse
import re
import signal
import sys
import threading
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING

from worker import __version__
from worker.cli.common import UsageError, add_kafka_options, kafka_from, resolve_topic, topics_from
from worker.cli.progress import progress_bar
from worker.cli.replay_sources import (
    FROM_FILE_HELP,
    FROM_TOPICS_HELP,
    file_inputs,
    input_summary,
    inputs_metadata,
    merged_inputs,
    single_decisions_file,
    topic_values,
)
from worker.codec.errors import DecodeError
from worker.codec.json_codec import decode_json
from worker.contract.messages import MarketSnapshot
from worker.core.backtest import BacktestExecutor
from worker.core.engine import EngineConfig, ExecutionEngine
from worker.core.fills import FillModel, fill_model
from worker.core.latency import LatencyModel
from worker.core.market import DEFAULT_MAX_CARRY, DEFAULT_MAX_CARRY_MS, MarketView
from worker.io.outbox import Outbox, OutboxLine
from worker.policy.pretrade import PreTradePolicy
from worker.policy.rng import Rng
from worker.policy.rounding import PriceRounding
from worker.reporting.sources import file_digest, write_run_metadata
from worker.runtime.replay import (
    REPLAY_SOURCE,
    ReplaySink,
    jsonl_blob,
    jsonl_lines,
    outbox_sink,
    read_input_file,
    replay,
)
from worker.runtime.replay_inputs import MergedInputs
from worker.runtime.replay_merge import replay_merged
from worker.runtime.summary import render_rules

# The Kafka client and the live worker load only for --from-topic, --to-topic and --modes (a
# replay of a file starts without them: worker/cli/entry.py).
if TYPE_CHECKING:
    from worker.io.kafka import KafkaConfig


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "replay", help="deterministic backtest of decisions (or every input role) from files or topics"
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--from-file", action="append", metavar="[ROLE=]PATH", help=FROM_FILE_HELP)
    source.add_argument("--from-topic", help="decisions from this topic name or role (read without a consumer group)")
    source.add_argument("--from-topics", action="store_true", help=FROM_TOPICS_HELP)
    parser.add_argument(
        "--range",
        action="append",
        default=[],
        metavar="P:FIRST-LAST",
        help="with --from-topic: only partition P, offsets FIRST..LAST (either may be empty); repeatable",
    )
    parser.add_argument(
        "--from-ts",
        type=int,
        help="with --from-topic(s): start at this timestamp (ms); --from-topics reads the compacted "
        "strategy_mode and harvest_health roles whole",
    )
    parser.add_argument("--out", type=Path, help="write the outbox layout (ready/exec_events/...) here")
    parser.add_argument(
        "--outbox-grace-ms", type=int, default=60_000, help="with --out: minute files published this far behind"
    )
    parser.add_argument(
        "--to-topic",
        help="also publish the exec-events to this topic (never a live one: see --force-into-live-topic)",
    )
    parser.add_argument(
        "--force-into-live-topic",
        action="store_true",
        help="write --to-topic even if it is a live exec_events/dlq/shadow_events topic or holds a "
        "live worker's transactional output",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the simulated latency")
    parser.add_argument("--modes", type=Path, help="strategy modes file; modes follow sim-time")
    parser.add_argument(
        "--fill-model",
        default="immediate",
        help="immediate | quote | depth | spread_fees | fixed_bps:BPS | sqrt_impact:K_BPS:ADV",
    )
    parser.add_argument("--market", type=Path, help="JSONL market.v1 snapshots (needed by quote and depth)")
    # i14diff: the latency model as `execworker diff --fit` prints it.
    parser.add_argument(
        "--latency",
        metavar="BASE_MS:MEAN_MS",
        help="simulated latency: BASE_MS + exponential extra of mean MEAN_MS (default 4:6)",
    )
    parser.add_argument(
        "--tick-carry",
        type=int,
        default=DEFAULT_MAX_CARRY,
        metavar="N",
        help=f"tick rule: carry a trade direction across at most N unchanged prices (default {DEFAULT_MAX_CARRY})",
    )
    parser.add_argument(
        "--tick-carry-ms",
        type=int,
        default=DEFAULT_MAX_CARRY_MS,
        metavar="MS",
        help=f"tick rule: ... and for at most MS since the last price change (default {DEFAULT_MAX_CARRY_MS})",
    )
    parser.add_argument(
        "--maker-fee-bps",
        default="0",
        help="resting (maker) fills pay this fee in their price; negative = rebate (default 0)",
    )
    parser.add_argument(
        "--queue-position",
        action="store_true",
        help="resting orders queue behind the volume shown at their price (docs/architecture.md)",
    )
    parser.add_argument(
        "--price-rounding", default="passive", help="passive (default) | aggressive | nearest (docs: rounding)"
    )
    add_kafka_options(parser)
    parser.set_defaults(handler=run_replay)


def parse_ranges(specs: list[str]) -> dict[int, tuple[int | None, int | None]] | None:
    if not specs:
        return None
    ranges: dict[int, tuple[int | None, int | None]] = {}
    for spec in specs:
        match = re.fullmatch(r"(\d+):(\d*)-(\d*)", spec)
        if match is None:
            raise UsageError(f"--range {spec}: expected P:FIRST-LAST, e.g. 0:100-200, 3:500- or 2:-")
        first, last = match.group(2), match.group(3)
        ranges[int(match.group(1))] = (int(first) if first else None, int(last) if last else None)
    return ranges


def latency_from(args: argparse.Namespace) -> LatencyModel | None:
    """`--latency BASE_MS:MEAN_MS` (i14diff: what `execworker diff --fit` prints)."""
    spec = getattr(args, "latency", None)
    if spec is None:
        return None
    base, colon, mean = spec.partition(":")
    try:
        if colon and int(base) >= 0:
            return LatencyModel(int(base), float(mean))
    except ValueError:
        pass
    raise UsageError(f"--latency {spec}: use BASE_MS:MEAN_MS, e.g. 4:6 (integer base, mean 0..60000)")


def fill_model_from(args: argparse.Namespace) -> FillModel:
    try:
        model = fill_model(args.fill_model)
    except ValueError as exc:
        raise UsageError(f"--fill-model: {exc}") from None
    if model.name in ("quote", "depth") and getattr(args, "market", None) is None:
        raise UsageError(f"--fill-model {model.name} needs market data: pass --market FILE (market.v1 JSONL)")
    return model


def market_from(args: argparse.Namespace) -> MarketView | None:
    if args.tick_carry < 0 or args.tick_carry_ms < 0:
        raise UsageError("--tick-carry and --tick-carry-ms: use 0 or more (0: never carry a direction)")
    if args.market is None:
        return None
    if not args.market.is_file():
        raise UsageError(f"--market {args.market}: no such file")
    snapshots = []
    for number, line in enumerate(args.market.read_bytes().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            snapshots.append(decode_json(MarketSnapshot, line))
        except DecodeError as exc:
            raise UsageError(f"--market {args.market}:{number}: {exc.reason}") from None
    return MarketView.from_snapshots(snapshots, args.tick_carry, args.tick_carry_ms)


def _policy_from(args: argparse.Namespace) -> PreTradePolicy:
    if args.modes is None:
        return PreTradePolicy.default()
    from worker.cli.run_cmd import policy_from  # loads the live worker: only for a modes file

    return policy_from(args)


def maker_fee_from(args: argparse.Namespace) -> Decimal:
    try:
        fee = Decimal(args.maker_fee_bps)
    except InvalidOperation:
        raise UsageError(f"--maker-fee-bps {args.maker_fee_bps}: not a number") from None
    if not fee.is_finite() or abs(fee) > 1_000:
        raise UsageError(f"--maker-fee-bps {args.maker_fee_bps}: use bps between -1000 and 1000")
    if (fee or args.queue_position) and args.market is None:
        raise UsageError("--maker-fee-bps and --queue-position apply to resting orders: they need --market")
    return fee


def rounding_from(args: argparse.Namespace) -> PriceRounding:
    try:
        return PriceRounding(args.price_rounding)
    except ValueError:
        raise UsageError("--price-rounding: use passive, aggressive or nearest") from None


async def target_topic(args: argparse.Namespace) -> str | None:
    """The --to-topic name, after refusing a live one unless --force-into-live-topic."""
    if not args.to_topic:
        if args.force_into_live_topic:
            raise UsageError("--force-into-live-topic applies to --to-topic only")
        return None
    target = resolve_topic(topics_from(args), args.to_topic)
    kafka = kafka_from(args)
    await kafka.check_reachable()
    from worker.io.live_topics import live_topic_problem

    problem = await live_topic_problem(kafka, topics_from(args), target)
    if problem is None:
        return target
    if args.force_into_live_topic:
        print(f"warning: --force-into-live-topic: {problem}", file=sys.stderr)
        return target
    raise UsageError(
        f"--to-topic {args.to_topic}: refused, {problem}. Replayed events there would be taken for "
        f"live ones. Publish the replay to a topic of its own (e.g. --to-topic {target}.replay-NAME) or "
        "write it with --out DIR; add --force-into-live-topic only if nothing live uses this topic."
    )


async def run_replay(args: argparse.Namespace) -> int:
    target = await target_topic(args)
    files = file_inputs(args)
    if files and (args.range or args.from_ts is not None):
        raise UsageError("--range and --from-ts apply to --from-topic(s) only")
    single = single_decisions_file(files)
    merged: MergedInputs | None = None
    values: Iterable[bytes] = ()
    data: bytes | None = None
    if (files and single is None) or args.from_topics:
        merged = await merged_inputs(args, files)  # every input role, in the merge order
    elif single is not None:
        data = jsonl_blob(single)  # a JSONL file goes to the compiled fold whole
        values = read_input_file(single) if data is None else jsonl_lines(data)
    else:
        data = None
        kafka = kafka_from(args)
        await kafka.check_reachable()
        topic = resolve_topic(topics_from(args), args.from_topic)
        from worker.io.kafka import read_committed_topic

        records = await read_committed_topic(kafka, topic, parse_ranges(args.range), args.from_ts)
        values = topic_values(args, topic, [record.value for record in records])
    executor = BacktestExecutor(
        Rng(args.seed),
        latency=latency_from(args),
        fills=fill_model_from(args),
        market=market_from(args),
        maker_fee_bps=maker_fee_from(args),
        queue_position=args.queue_position,
    )
    engine = ExecutionEngine(executor, EngineConfig(rounding=rounding_from(args)), policy=_policy_from(args))
    if args.outbox_grace_ms < 0:
        raise UsageError("--outbox-grace-ms: use 0 or more")
    sinks: list[ReplaySink] = []
    outbox = Outbox(args.out, grace_ms=args.outbox_grace_ms) if args.out else None
    if outbox is not None:
        sinks.append(outbox_sink(outbox))
    try:
        with interruptible() as interrupted, progress_bar("replay") as advance:

            def progress(done: int, total: int) -> None:
                advance(done, total)
                if interrupted.is_set():
                    raise ReplayInterrupted(done, total)

            async with AsyncExitStack() as stack:
                if target is not None:
                    sinks.append(await stack.enter_async_context(topic_sink(kafka_from(args), target)))
                if merged is not None:
                    result = await replay_merged(engine, merged, sinks, progress)
                else:
                    result = await replay(engine, values, sinks, progress, data=data)
    except ReplayInterrupted as stop:
        print(
            f"replay interrupted after {stop.done} of {stop.total} {'inputs' if merged is not None else 'decisions'} "
            "(canonical order); "
            "outputs are partial" + (f": {args.out} holds what was written" if args.out else ""),
            file=sys.stderr,
        )
        if outbox is not None:
            outbox.drain(REPLAY_SOURCE)
            meta = replay_metadata(args, files, "", {})
            write_run_metadata(args.out, meta | {"interrupted_after_decisions": stop.done, "digest": None})
        return 130
    if outbox is not None:
        outbox.drain(REPLAY_SOURCE)  # the replay is over: every minute is complete
        write_run_metadata(args.out, replay_metadata(args, files, result.digest, dict(result.orders)))
    if merged is not None:
        print("\n".join(input_summary(result, merged)))
    else:
        print(f"replayed {result.decisions} decisions -> {result.events} exec-events; orders by final status:")
    for status, count in sorted(result.orders.items()):
        print(f"  {status:<16} {count}")
    if result.open_orders:
        print(f"  ({result.open_orders} still resting when the market data ends)")
    if result.rejected:
        print(
            "  undecodable input (live: the DLQ): " + ", ".join(f"{k}={v}" for k, v in sorted(result.rejected.items()))
        )
    if args.out:
        print(f"outbox: {args.out}/ready/exec_events/")
    for line in render_rules(engine.policy.rules_overview(), result.observed):
        print(line)
    for switch in engine.mode_switches:
        where = f" for {switch.symbol}" if switch.symbol else ""
        print(f"  mode {switch.old} -> {switch.new} ({switch.trigger}) at {switch.at_ms}{where}")
    print(f"sha256:{result.digest}")
    return 0


def replay_metadata(
    args: argparse.Namespace, files: dict[str, Path], digest: str, orders: dict[str, int]
) -> dict[str, object]:
    """What `report` shows about the run: its inputs, fill model, seed, config and digest."""
    inputs: dict[str, object] = inputs_metadata(args, files)
    if args.from_topic is not None:
        inputs["topic"] = args.from_topic
        inputs["range"] = args.range
        inputs["from_ts"] = args.from_ts
    if args.market is not None:
        inputs["market"] = str(args.market)
        inputs["market_sha256"] = file_digest(args.market)
    if args.modes is not None:
        inputs["modes"] = str(args.modes)
        inputs["modes_sha256"] = file_digest(args.modes)
    return {
        "execworker": __version__,
        "inputs": inputs,
        "fill_model": args.fill_model,
        "seed": args.seed,
        **({"latency": args.latency} if getattr(args, "latency", None) else {}),
        "config": {
            "price_rounding": args.price_rounding,
            "tick_carry": args.tick_carry,
            "tick_carry_ms": args.tick_carry_ms,
            "outbox_grace_ms": args.outbox_grace_ms,
            "maker_fee_bps": args.maker_fee_bps,
            "queue_position": args.queue_position,
        },
        "digest": f"sha256:{digest}",
        "orders": orders,
    }


class ReplayInterrupted(Exception):
    def __init__(self, done: int, total: int) -> None:
        super().__init__(f"interrupted after {done} of {total} decisions")
        self.done = done
        self.total = total


@contextmanager
def interruptible() -> Iterator[threading.Event]:
    """Ctrl-C (SIGINT) or SIGTERM sets the event instead of killing the run: the replay stops at
    its next progress report and says how far it got. A plain signal handler, not the event
    loop's: a backtest's fold rarely yields to the loop, the interpreter runs this one anyway."""
    flag = threading.Event()
    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    for signum in previous:
        signal.signal(signum, lambda _signum, _frame: flag.set())
    try:
        yield flag
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@asynccontextmanager
async def topic_sink(kafka: KafkaConfig, topic: str) -> AsyncIterator[ReplaySink]:
    """Publishes a replay's exec-events to a topic, keyed by symbol, in canonical order."""
    producer = kafka.producer(acks="all", enable_idempotence=True, linger_ms=10)
    await producer.start()
    try:

        async def write(lines: Sequence[OutboxLine]) -> None:
            for line in lines:
                await producer.send(topic, value=line.payload, key=line.symbol.encode())

        yield write
        await producer.flush()
    finally:
        await producer.stop()
