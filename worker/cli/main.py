"""`execworker` / `python -m worker`: parse the verb, run it, map failures to exit codes.

Exit codes: 0 success, 1 the verb ran and found a problem, 2 bad flags or config (the message
says what to fix), 3 the broker is unreachable.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence

from worker import __version__
from worker.cli import (
    config_cmd,
    diff_cmd,
    dlq_cmd,
    explain_cmd,
    produce_cmd,
    replay_cmd,
    report_cmd,
    run_cmd,
    sandbox_cmd,
    schemas_cmd,
    tail_cmd,
    topics_cmd,
    verify_cmd,
)
from worker.cli.common import UsageError, setup_logging
from worker.cli.logformat import LOG_FORMAT_ENV, LOG_FORMATS
from worker.io.kafka import AUTHORIZATION_ERRORS, BrokerUnreachable, KafkaAccessDenied, UnknownTopic, access_denied
from worker.io.kafka_security import KafkaSecurity, KafkaSecurityError
from worker.io.topics import TopicsConfigError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="execworker", description=__doc__)
    parser.add_argument("--version", action="version", version=f"execworker {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default=argparse.SUPPRESS,
        help=f"log lines as text or JSON objects (default: ${LOG_FORMAT_ENV}, else text); also after the verb",
    )
    sub = parser.add_subparsers(dest="verb", required=True)
    for module in (
        topics_cmd,
        run_cmd,
        replay_cmd,
        report_cmd,
        produce_cmd,
        tail_cmd,
        verify_cmd,
        schemas_cmd,
        dlq_cmd,
        sandbox_cmd,
        config_cmd,
        explain_cmd,
        diff_cmd,  # i14diff
    ):
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    log_format = getattr(args, "log_format", None) or os.environ.get(LOG_FORMAT_ENV) or "text"
    if log_format not in LOG_FORMATS:
        print(f"execworker: error: ${LOG_FORMAT_ENV}={log_format}: choose text or json", file=sys.stderr)
        return 2
    setup_logging(args.verbose, log_format)
    try:
        return int(asyncio.run(args.handler(args)))
    except UsageError as exc:
        print(f"execworker: error: {exc}", file=sys.stderr)
        return 2
    except (UnknownTopic, TopicsConfigError) as exc:
        print(f"execworker: error: {exc}", file=sys.stderr)
        return 2
    except BrokerUnreachable as exc:
        print(f"execworker: error: {exc}", file=sys.stderr)
        return 3
    except (KafkaSecurityError, KafkaAccessDenied) as exc:
        print(f"execworker: error: {exc}", file=sys.stderr)
        return 2
    except AUTHORIZATION_ERRORS as exc:
        print(f"execworker: error: {access_denied(exc, KafkaSecurity.from_env())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
