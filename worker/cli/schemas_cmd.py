"""`execworker schemas export|check`: the contract files, generated from the models and checked."""

from __future__ import annotations

import argparse
from pathlib import Path

from worker.cli.common import UsageError, topics_for
from worker.codec.registry import FileSchemaRegistry
from worker.codec.schema_files import DOC_PATH, check, export
from worker.io.schema_registry import URL_ENV, RegistryClient, SchemaRegistryError, register_all
from worker.io.topics import WireFormat


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    schemas = sub.add_parser("schemas", help="contract schemas (schemas/) and their docs")
    verbs = schemas.add_subparsers(dest="schemas_verb", required=True)
    for verb, text in (("export", "regenerate schemas/ and the docs"), ("check", "verify them (CI)")):
        parser = verbs.add_parser(verb, help=text)
        parser.add_argument("--schemas-dir", type=Path, default=Path("schemas"))
        parser.add_argument("--doc", type=Path, default=DOC_PATH)
        parser.set_defaults(handler=run_export if verb == "export" else run_check)
    verbs.choices["export"].add_argument(
        "--allow-breaking", action="store_true", help="register an incompatible change anyway"
    )
    verbs.choices["export"].add_argument(
        "--register",
        action="store_true",
        help="also register every version with $SCHEMA_REGISTRY_URL, subject <topic>-value, for the Avro topics",
    )
    verbs.choices["export"].add_argument(
        "--topics", type=Path, default=Path("topics.yaml"), help="topics file for --register (default: topics.yaml)"
    )
    verbs.choices["check"].add_argument("--examples", type=int, default=200, help="hypothesis examples")


async def run_export(args: argparse.Namespace) -> int:
    report = export(args.schemas_dir, args.doc, args.allow_breaking)
    for note in report.notes:
        print(note)
    for problem in report.problems:
        print(f"error: {problem}")
    if report.ok and not report.notes:
        print("schemas/ and docs are up to date")
    if report.ok and args.register:
        return register_schemas(args)
    return 0 if report.ok else 1


def register_schemas(args: argparse.Namespace) -> int:
    client = RegistryClient.from_env()
    if client is None:
        raise UsageError(f"--register needs ${URL_ENV} (the Confluent-compatible schema registry's URL)")
    topics = topics_for(args.topics)
    avro = {spec.name: spec.value_schema for spec in topics.topics.values() if spec.format is WireFormat.AVRO}
    if not avro:
        print(f"no Avro topics in {args.topics} (format: avro); nothing to register")
        return 0
    try:
        lines = register_all(client, FileSchemaRegistry(args.schemas_dir / "registry.json"), avro)
    except SchemaRegistryError as exc:
        raise UsageError(str(exc)) from None
    for line in lines:
        print(line)
    return 0


async def run_check(args: argparse.Namespace) -> int:
    report = check(args.schemas_dir, args.doc, args.examples)
    for problem in report.problems:
        print(f"FAIL  {problem}")
    if report.ok:
        print("PASS  schemas/ matches the models; versions are backward compatible; ")
        print("      pydantic, JSON Schema and Avro agree; docs/api_contracts.md is current, links live")
    return 0 if report.ok else 1
