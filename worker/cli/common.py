"""What every verb shares: the broker and topics options, and turning config errors into exits."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from worker.cli.logformat import formatter_for

# The Kafka client and the topics loader are imported where they are used: a verb that needs
# neither (a replay of a file) starts without them (~0.2 s of imports on this machine).
if TYPE_CHECKING:
    from worker.io.kafka import KafkaConfig
    from worker.io.topics import TopicsFile

BOOTSTRAP_ENV = "KAFKA_BOOTSTRAP_SERVERS"  # the same name as worker.io.kafka.BOOTSTRAP_ENV


class UsageError(Exception):
    """Bad flags or config: the message says what to fix; the process exits with status 2."""


def add_kafka_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--bootstrap-servers",
        help=f"Kafka bootstrap servers (default: ${BOOTSTRAP_ENV}, else 127.0.0.1:9092)",
    )
    parser.add_argument("--topics", type=Path, default=Path("topics.yaml"), help="topics file (default: topics.yaml)")
    parser.add_argument(
        "--schemas-dir", type=Path, default=Path("schemas"), help="schemas for Avro topics (default: schemas)"
    )


def kafka_from(args: argparse.Namespace) -> KafkaConfig:
    from worker.io.kafka import KafkaConfig, bootstrap_from_env

    return KafkaConfig(bootstrap_from_env(args.bootstrap_servers))


def topics_from(args: argparse.Namespace) -> TopicsFile:
    return topics_for(args.topics)


def topics_for(path: Path) -> TopicsFile:
    from worker.io.topics import TopicsConfigError, load_topics

    try:
        return load_topics(path)
    except TopicsConfigError as exc:
        raise UsageError(str(exc)) from None


def resolve_topic(topics: TopicsFile, name_or_role: str) -> str:
    """Accepts a topic name (`decisions.v1`) or its role in topics.yaml (`decisions`)."""
    if name_or_role in topics.topics:
        return topics.topics[name_or_role].name
    return name_or_role


def setup_logging(verbose: bool, log_format: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter_for(log_format))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler])
    # aiokafka logs every rebalance step and connection at INFO; keep our own lines readable.
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
