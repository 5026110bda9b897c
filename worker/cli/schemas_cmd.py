"""`execworker schemas export|check`: the contract files, generated from the models and checked."""

from __future__ import annotations

import argparse
from pathlib import Path

from worker.codec.schema_files import DOC_PATH, check, export


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
    verbs.choices["check"].add_argument("--examples", type=int, default=200, help="hypothesis examples")


async def run_export(args: argparse.Namespace) -> int:
    report = export(args.schemas_dir, args.doc, args.allow_breaking)
    for note in report.notes:
        print(note)
    for problem in report.problems:
        print(f"error: {problem}")
    if report.ok and not report.notes:
        print("schemas/ and docs are up to date")
    return 0 if report.ok else 1


async def run_check(args: argparse.Namespace) -> int:
    report = check(args.schemas_dir, args.doc, args.examples)
    for problem in report.problems:
        print(f"FAIL  {problem}")
    if report.ok:
        print("PASS  schemas/ matches the models; versions are backward compatible; ")
        print("      pydantic, JSON Schema and Avro agree; docs/api_contracts.md is current, links live")
    return 0 if report.ok else 1
