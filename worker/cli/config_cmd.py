"""`execworker config show`: the effective run configuration, secrets masked."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import yaml

from worker.cli.run_cmd import API_KEY_ENV, API_SECRET_ENV, API_SECRET_FILE_ENV, add_run_options, config_from
from worker.io.kafka_security import KafkaSecurity, KafkaSecurityError
from worker.policy.modes import ModesConfigError
from worker.policy.pretrade import effective_rules


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    config = sub.add_parser("config", help="the effective configuration (flags > EXECWORKER_* env > --config file)")
    verbs = config.add_subparsers(dest="config_verb", required=True)
    show = verbs.add_parser("show", help="print the effective run settings; secrets masked")
    add_run_options(show)
    show.set_defaults(handler=show_config)


def effective(args: argparse.Namespace) -> dict[str, Any]:
    """What `run` with the same flags, env and file would use, as plain data, secrets masked."""
    config = config_from(args)
    run = {k: str(v) if isinstance(v, Path) else v for k, v in config.model_dump().items()}
    if run["transactional_prefix"] is None:
        run["transactional_prefix"] = run["group"]
    try:
        kafka: dict[str, Any] = dict(KafkaSecurity.from_env().describe())
    except KafkaSecurityError as exc:
        kafka = {"error": str(exc)}
    venue = {
        API_KEY_ENV: "***" if os.environ.get(API_KEY_ENV) else None,
        API_SECRET_ENV: "***" if os.environ.get(API_SECRET_ENV) else None,
        API_SECRET_FILE_ENV: os.environ.get(API_SECRET_FILE_ENV),
    }
    try:
        rules: list[str] | dict[str, str] = effective_rules(config.modes)
    except ModesConfigError as exc:
        rules = {"error": str(exc)}
    return {"run": run, "rules": rules, "kafka_security": kafka, "venue_credentials": venue}


async def show_config(args: argparse.Namespace) -> int:
    print(yaml.safe_dump(effective(args), sort_keys=False), end="")
    return 0
