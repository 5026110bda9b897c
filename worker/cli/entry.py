"""The `execworker` console script.

`execworker replay` starts on its own parser, without importing the other verbs: their Kafka,
HTTP and worker modules cost ~0.4 s of start-up here, more than the compiled fold of 100,000
decisions. Every other verb goes through `worker.cli.main`.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] != ["replay"]:
        from worker.cli.main import main as full

        return full(arguments)
    return _replay(arguments)


def _replay(arguments: list[str]) -> int:
    from worker import __version__
    from worker.cli import replay_cmd
    from worker.cli.common import UsageError, setup_logging

    parser = argparse.ArgumentParser(prog="execworker")
    parser.add_argument("--version", action="version", version=f"execworker {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    replay_cmd.register(parser.add_subparsers(dest="verb", required=True))
    args = parser.parse_args(arguments)
    setup_logging(args.verbose)
    try:
        return int(asyncio.run(args.handler(args)))
    except UsageError as exc:
        print(f"execworker: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        # The same exits as worker.cli.main for the topic paths (their modules are loaded by now).
        from worker.io.kafka import BrokerUnreachable, UnknownTopic
        from worker.io.topics import TopicsConfigError

        if isinstance(exc, UnknownTopic | TopicsConfigError):
            print(f"execworker: error: {exc}", file=sys.stderr)
            return 2
        if isinstance(exc, BrokerUnreachable):
            print(f"execworker: error: {exc}", file=sys.stderr)
            return 3
        raise
