"""Chaos run: kill -9, pauses past the session timeout, rebalances and a broker restart against
the real broker and the sandbox venue with faults on (late and duplicate deliveries, lost
answers, a skewed venue clock); then prove nothing was lost and nothing was done twice.

    make chaos                      # full size: 10k decisions, 12 partitions, 3 workers, 20 kills
    python -m bench.chaos --decisions 2000 --kills 5 --pauses 2 --late 0.12 ...

Every process is real: a private Apache Kafka (ops/kafka on its own port and directory, so it
can be restarted), `execworker sandbox-exchange` with seeded faults, `execworker run` workers in
one consumer group with static membership. The schedule of kills, pauses and restarts is drawn
from a seeded generator; timing still varies run to run, which is the point.

A pause freezes a worker with SIGSTOP for longer than its session timeout (the group gives its
partitions to another worker, which fences it), then resumes it with SIGCONT: the old process
wakes up with requests in flight. Every worker's exit is recorded: our own SIGKILLs, our SIGTERM
stops that exit 0, and our SIGTERMs that arrive while a worker is still starting (before it
installs its handler, so it dies of the signal: `sigterm_early`) are accounted for; any other
exit is `unaccounted` and fails the run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiohttp import ClientSession

from examples.gen_decisions import SYMBOLS, decisions
from worker.contract.enums import OrderStatus
from worker.contract.state_machine import is_terminal
from worker.io.kafka import KafkaConfig, read_committed_topic
from worker.io.outbox import Outbox
from worker.io.topics import apply_topics, write_variant
from worker.sandbox.faults import FaultPlan

ROOT = Path(__file__).resolve().parents[1]
BROKER_EXIT_CODE = 3  # `execworker run`: no broker answers / a partition takeover failed
OPS = str(ROOT / "ops" / "kafka")
DEFAULT_FAULTS = (
    "latency=1-5ms,timeout_before=0.01,timeout_after=0.01,5xx=0.01,5xx_after=0.01,429=0.01,drop=0.01,hang=2s"
)


@dataclass
class ChaosConfig:
    decisions: int = 10_000
    partitions: int = 12
    workers: int = 3
    kills: int = 20
    graceful_restarts: int = 6
    broker_restart: bool = True
    faults: str = DEFAULT_FAULTS  # the base mix; the delivery faults below are added to it
    late: float = 0.05  # share of order requests held `late_hold` (past the client's timeout), then processed
    late_hold: str = "2.5-4.5s"
    duplicate: float = 0.02  # share of order requests processed twice, the copy `dup_delay` later
    dup_delay: str = "0.5-3s"
    lost_answer: float = 0.01  # share processed with the answer lost
    skew_ms: int = -700  # the venue's clock minus ours (|skew| < 1 s: requests signed locally still pass)
    limits: str = "unlimited"  # the sandbox's --limits: chaos measures correctness, not the rate wall
    seed: int = 7
    max_batch: int = 50
    pause_s: tuple[float, float] = (0.5, 2.0)  # between chaos actions
    pauses: int = 3  # workers frozen (SIGSTOP) past the session timeout, then resumed (SIGCONT)
    freeze_s: float = 9.0  # how long a pause lasts; must exceed the session timeout
    session_timeout_ms: int = 6_000
    # Count a worker's exit with code 3 (broker unreachable, takeover failed: "restart me") as
    # ours when the process lived through one of our broker restarts. Off: any such exit fails.
    tolerate_broker_exits: bool = False

    def __post_init__(self) -> None:
        if self.pauses and self.freeze_s * 1000 <= self.session_timeout_ms:
            raise ValueError(f"freeze_s {self.freeze_s} must exceed the session timeout ({self.session_timeout_ms} ms)")

    def fault_spec(self) -> str:
        """The sandbox's --faults: the base mix plus the delivery faults and the clock skew."""
        parts = [self.faults] if self.faults else []
        for name, probability in (
            ("late", self.late),
            ("duplicate", self.duplicate),
            ("lost_answer", self.lost_answer),
        ):
            if probability:
                parts.append(f"{name}={probability}")
        parts += [f"late_hold={self.late_hold}", f"dup_delay={self.dup_delay}", f"skew={self.skew_ms:+d}ms"]
        return ",".join(parts)


@dataclass
class WorkerExit:
    worker: str
    pid: int
    code: int | None  # None: still running when the run ended (killed by the harness)
    # "sigkill" (ours), "sigterm" (ours, exited 0), "sigterm_early" (ours, and the process died of
    # it: it came before the worker installed its handler, i.e. while it was starting),
    # "broker_exit" (exit 3 of a process that lived through our broker restart; only with
    # `tolerate_broker_exits`), or "unaccounted" (any other exit: the run fails)
    cause: str
    age_s: float  # how long the process had run


@dataclass
class ChaosReport:
    config: dict[str, Any]
    decisions: int = 0
    kills: int = 0
    graceful_restarts: int = 0
    pauses: int = 0
    broker_restarts: int = 0
    venue_orders: int = 0
    exec_events: int = 0
    terminal_by_status: dict[str, int] = field(default_factory=dict)
    # Client order ids accepted twice by the worker's own requests (accepts - copy_accepts > 1;
    # a late delivery of the worker's request is its own request).
    accepted_twice: int = 0
    # Accepts made by a duplicate copy the sandbox injected (Binance accepts such a copy too when
    # it arrives within its recvWindow after the order closed): reported, not a worker fault.
    copy_accepts: int = 0
    late_accepts: int = 0  # accepts by a request the sandbox held (counted in accepted_twice if a second)
    expired_refusals: dict[str, int] = field(default_factory=dict)  # -1021 by origin: direct, late, copy
    deliveries: dict[str, dict[str, int]] = field(default_factory=dict)  # late / copy: results at the venue
    terminal_twice: int = 0  # client order ids with two terminal exec-events
    lost: int = 0  # decisions with no terminal exec-event
    missing_at_venue: int = 0  # orders reported as at the venue that the venue never saw
    outbox_missing: int = 0
    outbox_extra: int = 0
    parts_left: int = 0
    faults_injected: dict[str, int] = field(default_factory=dict)
    exits: list[WorkerExit] = field(default_factory=list)
    exits_unaccounted: int = 0
    exits_by_cause: dict[str, int] = field(default_factory=dict)
    wall_s: float = 0.0

    @property
    def ok(self) -> bool:
        return not (
            self.accepted_twice
            or self.exits_unaccounted
            or self.terminal_twice
            or self.lost
            or self.missing_at_venue
            or self.outbox_missing
            or self.outbox_extra
            or self.parts_left
        )


def free_port_pair() -> int:
    """Two free neighbouring ports (client, controller) below Linux's ephemeral range.

    Ports handed out by the OS (bind to 0) come from the ephemeral range, where outgoing
    connections may take the neighbour (or the port itself, at a restart) at any moment.
    """
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(20_000, 32_000)
        if all(_bindable(p) for p in (port, port + 1)):
            return port
    raise RuntimeError("no free port pair for the private broker")


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class PrivateBroker:
    """A broker of our own (port, directory) so the run can restart it without hurting others."""

    def __init__(self, home: Path) -> None:
        self.port = free_port_pair()
        self.env = {**os.environ, "EXECWORKER_KAFKA_PORT": str(self.port), "EXECWORKER_KAFKA_HOME": str(home)}
        self.env.pop("KAFKA_BOOTSTRAP_SERVERS", None)
        self.address = f"127.0.0.1:{self.port}"

    def _ops(self, verb: str) -> None:
        subprocess.run([OPS, verb], env=self.env, check=True, capture_output=True, timeout=180)

    def up(self) -> None:
        self._ops("up")

    def down(self) -> None:
        self._ops("down")


def chaos_decisions(count: int, seed: int) -> list[dict[str, Any]]:
    """The sample generator's decisions, all IOC or MARKET: every order ends at once at the venue."""
    out = []
    for decision in decisions(count, seed):
        if decision["order_type"] == "LIMIT":
            decision["tif"] = "IOC"
        out.append(decision)
    return out


async def _produce(kafka: KafkaConfig, topic: str, values: list[dict[str, Any]]) -> None:
    producer = kafka.producer(acks="all", enable_idempotence=True, linger_ms=10)
    await producer.start()
    try:
        futures = []
        # Keyed by symbol with Kafka's default partitioner, as the worker checks (a decision on a
        # partition its symbol does not map to is dead-lettered as misrouted).
        for value in values:
            futures.append(await producer.send(topic, value=orjson.dumps(value), key=value["symbol"].encode()))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def _spawn(args: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    log = open(log_path, "ab")  # noqa: SIM115 - handed to the child for its whole life
    return subprocess.Popen(
        [sys.executable, "-m", "worker", *args],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


async def run_chaos(config: ChaosConfig, workdir: Path, bootstrap: str | None = None) -> ChaosReport:
    report = ChaosReport(config=asdict(config))
    rng = random.Random(config.seed)
    started = time.monotonic()
    broker: PrivateBroker | None = None
    if bootstrap is None:
        broker = PrivateBroker(workdir / "kafka")
        broker.up()
        bootstrap = broker.address
    kafka = KafkaConfig(bootstrap)
    await kafka.check_reachable()

    suffix = uuid.uuid4().hex[:8]
    topics_path = workdir / "topics.yaml"
    topics = write_variant(ROOT / "topics.yaml", topics_path, f"chaos{suffix}", config.partitions)
    async with kafka.admin_session() as admin:
        await apply_topics(admin, topics)

    values = chaos_decisions(config.decisions, config.seed)
    report.decisions = len(values)
    await _produce(kafka, topics.role("decisions").name, values)

    prices = workdir / "prices.json"
    prices.write_text(json.dumps({symbol: start for symbol, start, *_ in SYMBOLS}))
    sandbox = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "worker",
            "sandbox-exchange",
            "--port",
            "0",
            "--seed",
            str(config.seed),
            "--faults",
            config.fault_spec(),
            "--prices",
            str(prices),
            "--limits",
            config.limits,
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=open(workdir / "sandbox.log", "ab"),  # noqa: SIM115
    )
    assert sandbox.stdout is not None
    url = sandbox.stdout.readline().decode().strip().rsplit(" ", 1)[-1]

    group = f"chaos-{suffix}"
    outbox = workdir / "outbox"
    common = [
        "run",
        "--executor",
        "sandbox",
        "--venue-url",
        url,
        "--bootstrap-servers",
        bootstrap,
        "--topics",
        str(topics_path),
        "--group",
        group,
        "--outbox",
        str(outbox),
        "--metrics-port",
        "0",
        "--max-batch",
        str(config.max_batch),
        "--reconcile-interval-ms",
        "200",
        "--session-timeout-ms",
        str(config.session_timeout_ms),
        "--venue-timeout-s",
        "1",
    ]

    born: dict[int, float] = {}

    def start(index: int) -> subprocess.Popen[bytes]:
        process = _spawn([*common, "--instance-id", f"w{index}"], workdir / f"worker{index}.log")
        born[process.pid] = time.monotonic()
        return process

    outages: list[tuple[float, float]] = []  # broker restarts: (down at, up again at), monotonic

    def ended(index: int, process: subprocess.Popen[bytes], cause: str) -> None:
        code = process.returncode
        if cause == "sigterm" and code == -signal.SIGTERM:
            cause = "sigterm_early"
        elif cause == "sigterm" and code != 0:
            cause = "unaccounted"  # asked to stop gracefully, but did not exit cleanly
        elif cause == "unaccounted" and code == BROKER_EXIT_CODE and config.tolerate_broker_exits:
            # Lived through one of our broker restarts and gave up loudly (for a supervisor),
            # noticed within a minute of the broker being back.
            born_at, now = born.get(process.pid, started), time.monotonic()
            if any(born_at <= up and now <= up + 60 for _, up in outages):
                cause = "broker_exit"
        age = round(time.monotonic() - born.get(process.pid, started), 1)
        report.exits.append(WorkerExit(f"w{index}", process.pid, code, cause, age))
        report.exits_unaccounted += int(cause == "unaccounted")

    def check_alive() -> None:
        """A worker that ended without being told to is reported, and replaced so the run goes on."""
        for index, process in workers.items():
            if process.poll() is not None:
                ended(index, process, "unaccounted")
                workers[index] = start(index)

    workers = {i: start(i) for i in range(config.workers)}
    actions = ["kill"] * config.kills + ["restart"] * config.graceful_restarts + ["pause"] * config.pauses
    rng.shuffle(actions)
    if config.broker_restart and broker is not None:
        actions.insert(len(actions) // 2, "broker")
    try:
        for action in actions:
            await asyncio.sleep(rng.uniform(*config.pause_s))
            check_alive()
            index = rng.randrange(config.workers)
            if action == "kill":
                workers[index].send_signal(signal.SIGKILL)
                workers[index].wait(timeout=30)
                ended(index, workers[index], "sigkill")
                workers[index] = start(index)
                report.kills += 1
            elif action == "restart":
                workers[index].send_signal(signal.SIGTERM)
                workers[index].wait(timeout=60)
                ended(index, workers[index], "sigterm")
                workers[index] = start(index)
                report.graceful_restarts += 1
            elif action == "pause":
                # Frozen past the session timeout: the group moves its partitions to another
                # worker; then it wakes up with whatever it had in flight.
                workers[index].send_signal(signal.SIGSTOP)
                try:
                    await asyncio.sleep(config.freeze_s)
                finally:
                    workers[index].send_signal(signal.SIGCONT)
                report.pauses += 1
            else:
                assert broker is not None
                down_at = time.monotonic()
                broker.down()
                await asyncio.sleep(1.0)
                broker.up()
                outages.append((down_at, time.monotonic()))
                report.broker_restarts += 1
        check_alive()
        for worker in workers.values():
            worker.send_signal(signal.SIGTERM)
        for index, worker in workers.items():
            worker.wait(timeout=120)
            ended(index, worker, "sigterm")
        final = _spawn([*common, "--until-drained"], workdir / "final.log")
        final.wait(timeout=600)
        if final.returncode != 0:
            report.exits.append(WorkerExit("final", final.pid, final.returncode, "unaccounted", 0.0))
            report.exits_unaccounted += 1

        ledger_body = await _final_ledger(url)
        await _check(report, kafka, topics.role("exec_events").name, values, ledger_body, outbox)
    finally:
        for index, worker in workers.items():
            if worker.poll() is None:
                worker.send_signal(signal.SIGCONT)
                worker.kill()
                worker.wait(timeout=30)
                if not any(e.pid == worker.pid for e in report.exits):
                    age = round(time.monotonic() - born.get(worker.pid, started), 1)
                    report.exits.append(WorkerExit(f"w{index}", worker.pid, None, "sigkill", age))
        sandbox.send_signal(signal.SIGTERM)
        sandbox.wait(timeout=30)
        if broker is not None:
            broker.down()
    report.exits_by_cause = dict(Counter(e.cause for e in report.exits))
    report.wall_s = round(time.monotonic() - started, 1)
    return report


async def _final_ledger(url: str, patience_s: float = 30.0) -> dict[str, Any]:
    """The venue's ledger once no late delivery or copy is still to be processed (the longest
    hold is seconds; the drained worker usually outlasts them all)."""
    deadline = time.monotonic() + patience_s
    async with ClientSession() as session:
        while True:
            async with session.get(f"{url}/sandbox/ledger") as response:
                body: dict[str, Any] = await response.json()
            if not body.get("pending_deliveries") or time.monotonic() > deadline:
                return body
            await asyncio.sleep(0.5)  # another process's timers: nothing to await but its ledger


async def _check(
    report: ChaosReport,
    kafka: KafkaConfig,
    exec_topic: str,
    values: list[dict[str, Any]],
    ledger_body: dict[str, Any],
    outbox_dir: Path,
) -> None:
    ledger = {entry["client_order_id"]: entry for entry in ledger_body["orders"]}
    report.venue_orders = len(ledger)
    report.faults_injected = ledger_body.get("faults", {})
    report.accepted_twice = sum(1 for e in ledger.values() if e["accepts"] - e.get("copy_accepts", 0) > 1)
    report.copy_accepts = sum(e.get("copy_accepts", 0) for e in ledger.values())
    report.late_accepts = sum(e.get("late_accepts", 0) for e in ledger.values())
    processed = ledger_body.get("processed", {})
    report.expired_refusals = {origin: results.get("-1021", 0) for origin, results in processed.items()}
    report.deliveries = {origin: processed.get(origin, {}) for origin in ("late", "copy")}

    records = await read_committed_topic(kafka, exec_topic)
    report.exec_events = len(records)
    terminal_by_order: Counter[str] = Counter()
    terminal_rows: set[str] = set()
    final: dict[str, dict[str, Any]] = {}
    for record in records:
        event = orjson.loads(record.value)
        if is_terminal(OrderStatus(event["status"])):
            terminal_by_order[event["client_order_id"]] += 1
            terminal_rows.add(event["signal_row_id"])
            final[event["client_order_id"]] = event
    report.terminal_twice = sum(1 for count in terminal_by_order.values() if count > 1)
    report.lost = sum(1 for value in values if value["signal_row_id"] not in terminal_rows)
    report.terminal_by_status = dict(Counter(e["status"] for e in final.values()))
    # An order that ended FILLED or EXPIRED, or that the venue rejected, must be in the ledger.
    for coid, event in final.items():
        venue_said = event["status"] in ("FILLED", "EXPIRED", "CANCELED") or (event["reason"] or "").startswith(
            "venue:"
        )
        if venue_said and coid not in ledger:
            report.missing_at_venue += 1

    outbox = Outbox(outbox_dir)
    lines = Counter(outbox.iter_lines())
    topic_lines = Counter(r.value for r in records)
    report.outbox_missing = sum((topic_lines - lines).values())
    report.outbox_extra = sum((lines - topic_lines).values())
    report.parts_left = len(outbox.leftover_parts())


def main() -> None:
    parser = argparse.ArgumentParser(description="execworker chaos run (real broker, sandbox venue)")
    defaults = ChaosConfig()
    parser.add_argument("--decisions", type=int, default=defaults.decisions)
    parser.add_argument("--partitions", type=int, default=defaults.partitions)
    parser.add_argument("--workers", type=int, default=defaults.workers)
    parser.add_argument("--kills", type=int, default=defaults.kills)
    parser.add_argument("--restarts", type=int, default=defaults.graceful_restarts)
    parser.add_argument("--no-broker-restart", action="store_true")
    parser.add_argument("--pauses", type=int, default=defaults.pauses, help="workers frozen past the session timeout")
    parser.add_argument("--freeze-s", type=float, default=defaults.freeze_s, help="how long a pause lasts")
    parser.add_argument("--session-timeout-ms", type=int, default=defaults.session_timeout_ms)
    parser.add_argument("--faults", default=defaults.faults, help="the base fault mix (docs/sandbox.md)")
    parser.add_argument("--late", type=float, default=defaults.late, help="share of order requests delivered late")
    parser.add_argument("--late-hold", default=defaults.late_hold, help="how long a late request is held, A-Bs")
    parser.add_argument("--duplicate", type=float, default=defaults.duplicate, help="share delivered twice")
    parser.add_argument("--dup-delay", default=defaults.dup_delay, help="when the copy arrives, A-Bs")
    parser.add_argument("--lost-answer", type=float, default=defaults.lost_answer, help="share with the answer lost")
    parser.add_argument("--skew-ms", type=int, default=defaults.skew_ms, help="the venue's clock minus ours")
    parser.add_argument("--limits", default=defaults.limits, help="the sandbox's --limits")
    parser.add_argument(
        "--tolerate-broker-exits",
        action="store_true",
        help="an exit 3 (broker unreachable / takeover failed) of a worker that lived through the broker "
        "restart is accounted for, not a failure",
    )
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "chaos.json")
    args = parser.parse_args()
    try:
        config = ChaosConfig(
            decisions=args.decisions,
            partitions=args.partitions,
            workers=args.workers,
            kills=args.kills,
            graceful_restarts=args.restarts,
            broker_restart=not args.no_broker_restart,
            faults=args.faults,
            late=args.late,
            late_hold=args.late_hold,
            duplicate=args.duplicate,
            dup_delay=args.dup_delay,
            lost_answer=args.lost_answer,
            skew_ms=args.skew_ms,
            limits=args.limits,
            seed=args.seed,
            pauses=args.pauses,
            freeze_s=args.freeze_s,
            session_timeout_ms=args.session_timeout_ms,
            tolerate_broker_exits=args.tolerate_broker_exits,
        )
        FaultPlan.parse(config.fault_spec())
    except ValueError as exc:
        parser.error(str(exc))
    workdir = Path(tempfile.mkdtemp(prefix="execworker-chaos-"))
    report = asyncio.run(run_chaos(config, workdir))
    text = json.dumps({**asdict(report), "ok": report.ok}, indent=2)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(text + "\n")
    print(text)
    print(f"logs: {workdir}")
    sys.exit(0 if report.ok else 1)


if __name__ == "__main__":
    main()
