"""`execworker sandbox-exchange`: run the local Binance-style venue (see worker/sandbox)."""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
from decimal import Decimal
from pathlib import Path

from aiohttp import web

from worker.cli.common import UsageError
from worker.sandbox.faults import FaultPlan, FaultSpecError
from worker.sandbox.limits import Limits
from worker.sandbox.matching import Market
from worker.sandbox.server import DEFAULT_API_KEY, DEFAULT_API_SECRET, SandboxExchange
from worker.sandbox.symbols import DEFAULT_LISTINGS, SymbolFileError, load_listings


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("sandbox-exchange", help="run the local sandbox venue (Binance spot REST subset)")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8765, help="port (0 = any free port)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the price walk and the fault draws")
    parser.add_argument("--faults", help='fault spec, e.g. "timeout_after=0.02,5xx=0.02" (docs/sandbox.md)')
    parser.add_argument("--prices", type=Path, help='JSON {"BTCUSDT": "64250.00", ...}: starting mid prices')
    parser.add_argument("--spread-bps", default="2", help="quoted spread in basis points (default 2)")
    parser.add_argument("--walk-bps", type=int, default=0, help="random walk per order, in bps (default 0)")
    parser.add_argument("--api-key", default=DEFAULT_API_KEY, help=f"accepted API key (default {DEFAULT_API_KEY})")
    parser.add_argument("--api-secret", default=DEFAULT_API_SECRET, help="accepted API secret (default: documented)")
    parser.add_argument(
        "--limits",
        default="binance",
        help="rate limits: binance (6,000 weight/min, 50 orders/10 s, 160,000 orders/day; the default), "
        "unlimited, or W,O[,D] = weight per minute, orders per 10 s[, orders per day]",
    )
    parser.add_argument("--symbols", type=Path, help="JSON file of listed symbols (docs/sandbox.md); default: built-in")
    parser.add_argument("--balances", type=Path, help='JSON {"USDT": "1000000", ...}: starting account balances')
    parser.set_defaults(handler=run_sandbox)


async def run_sandbox(args: argparse.Namespace) -> int:
    try:
        faults = FaultPlan.parse(args.faults)
    except FaultSpecError as exc:
        raise UsageError(f"--faults: {exc}") from None
    try:
        limits = Limits.parse(args.limits)
    except ValueError as exc:
        raise UsageError(f"--limits {exc}") from None
    prices: dict[str, Decimal] = {}
    if args.prices:
        try:
            prices = {k: Decimal(str(v)) for k, v in json.loads(args.prices.read_text()).items()}
        except (OSError, ValueError, ArithmeticError) as exc:
            raise UsageError(f"--prices {args.prices}: {exc}") from None
    try:
        listings = load_listings(args.symbols) if args.symbols else DEFAULT_LISTINGS
    except SymbolFileError as exc:
        raise UsageError(f"--symbols: {exc}") from None
    balances: dict[str, Decimal] | None = None
    if args.balances:
        try:
            balances = {k: Decimal(str(v)) for k, v in json.loads(args.balances.read_text()).items()}
        except (OSError, ValueError, ArithmeticError, AttributeError) as exc:
            raise UsageError(f"--balances {args.balances}: {exc}") from None
    specs = tuple(listing.spec for listing in listings)
    market = Market(specs, random.Random(args.seed), prices, Decimal(args.spread_bps), args.walk_bps)
    exchange = SandboxExchange(
        market,
        faults,
        args.seed,
        args.api_key,
        args.api_secret,
        limits,
        listings=listings,
        balances=balances,
    )
    runner = web.AppRunner(exchange.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, args.host, args.port)
    try:
        await site.start()
    except OSError as exc:
        raise UsageError(f"cannot listen on {args.host}:{args.port}: {exc}") from None
    port = runner.addresses[0][1]
    print(f"sandbox-exchange listening on http://{args.host}:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await runner.cleanup()
    return 0
