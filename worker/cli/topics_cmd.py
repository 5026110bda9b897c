"""`execworker topics apply`: create missing topics, report drift, change nothing else."""

from __future__ import annotations

import argparse

from worker.cli.common import add_kafka_options, kafka_from, topics_from
from worker.io.topics import apply_topics


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    topics = sub.add_parser("topics", help="manage the topics in topics.yaml")
    verbs = topics.add_subparsers(dest="topics_verb", required=True)
    apply = verbs.add_parser("apply", help="create missing topics; report drift, never alter")
    add_kafka_options(apply)
    apply.add_argument("--replication-factor", type=int, help="override topics.yaml for new topics")
    apply.add_argument("--strict", action="store_true", help="exit 1 when an existing topic drifts from the file")
    apply.set_defaults(handler=run_apply)


async def run_apply(args: argparse.Namespace) -> int:
    topics = topics_from(args)
    kafka = kafka_from(args)
    await kafka.check_reachable()
    async with kafka.admin_session() as admin:
        reports = await apply_topics(admin, topics, args.replication_factor)
    drift = False
    for report in reports:
        print(f"{report.action:<8} {report.name}")
        for detail in report.details:
            print(f"         {detail}")
        drift |= report.action == "drift"
    return 1 if (drift and args.strict) else 0
