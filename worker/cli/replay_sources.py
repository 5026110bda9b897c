"""`execworker replay`: which inputs a replay reads (`--from-file [ROLE=]PATH`, `--from-topics`),
and how its summary names them. The reading, decoding and merge order live in
worker/runtime/replay_inputs.py; the fold in worker/runtime/replay_merge.py."""

from __future__ import annotations

import argparse
from pathlib import Path

from worker.cli.common import UsageError, kafka_from, topics_from
from worker.reporting.sources import file_digest
from worker.runtime.replay import ReplayResult
from worker.runtime.replay_inputs import (
    ROLES,
    InputSelectionError,
    MergedInputs,
    merge,
    parse_file_specs,
    read_files,
    read_topics,
)

FROM_FILE_HELP = (
    "[ROLE=]PATH: JSONL (or an Avro object container, .avro) of one input role: decisions, signals, "
    "strategy_mode, harvest_health or market; repeatable, one file per role; a bare PATH is decisions"
)
FROM_TOPICS_HELP = (
    "read every input role of the topics file (--topics): decisions, signals, strategy_mode, "
    "harvest_health, market; each with its role's format (JSON or Avro). Applied in one merge order: "
    "by event time (control records first within a millisecond), then symbol, role, position; one "
    "policy state per input partition, as live (docs/architecture.md, 'Replay of every input')"
)


def file_inputs(args: argparse.Namespace) -> dict[str, Path]:
    """{role: path} of `--from-file` (empty without it); exit 2 for an unknown role or a missing file."""
    try:
        return parse_file_specs(args.from_file or [])
    except InputSelectionError as exc:
        raise UsageError(str(exc)) from None


def single_decisions_file(files: dict[str, Path]) -> Path | None:
    """The path when the replay reads decisions from one file and nothing else (today's fast path)."""
    return files["decisions"] if set(files) == {"decisions"} else None


async def merged_inputs(args: argparse.Namespace, files: dict[str, Path]) -> MergedInputs:
    """The merged inputs of `--from-topics` or of several `--from-file` roles."""
    if not args.from_topics:
        return merge(read_files(files))
    if args.range:
        raise UsageError("--range applies to --from-topic only (offsets differ per topic): use --from-ts MS")
    kafka = kafka_from(args)
    await kafka.check_reachable()
    try:
        records, codecs = await read_topics(kafka, topics_from(args), args.schemas_dir, args.from_ts)
    except InputSelectionError as exc:
        raise UsageError(f"--from-topics: {exc}") from None
    return merge(records, codecs)


def input_summary(result: ReplayResult, merged: MergedInputs) -> list[str]:
    """The summary's lines about what was read, for a replay of several roles."""
    lines = [
        f"replayed {merged.inputs} inputs ({result.decisions} decisions, {result.signals} signals) "
        f"-> {result.events} exec-events; orders by final status:"
    ]
    control = ", ".join(f"{role}={result.control[role]}" for role in ROLES if role in result.control)
    lines.append(f"  control records applied: {control or 'none'}")
    if result.dropped:
        lines.append("  inputs with no order: " + ", ".join(f"{k}={v}" for k, v in sorted(result.dropped.items())))
    if result.ignored:
        lines.append(
            "  control records ignored (undecodable or unknown mode): "
            + ", ".join(f"{k}={v}" for k, v in sorted(result.ignored.items()))
        )
    return lines


def inputs_metadata(args: argparse.Namespace, files: dict[str, Path]) -> dict[str, object]:
    """The `inputs` of run.json: each file and its sha256, or the topics read."""
    inputs: dict[str, object] = {}
    if args.from_topics:
        inputs["topics_file"] = str(args.topics)
        inputs["from_ts"] = args.from_ts
        return inputs
    for role, path in files.items():
        inputs[role] = str(path)
        inputs[f"{role}_sha256"] = file_digest(path)
    return inputs


def topic_values(args: argparse.Namespace, topic: str, values: list[bytes]) -> list[bytes]:
    """`--from-topic` values as JSON: a topic the topics file names in Avro is read with its codec
    (a record that is not Avro stays as it is, and the replay counts it as undecodable)."""
    from worker.codec.errors import DecodeError
    from worker.codec.wire import AvroWire
    from worker.io.topics import TopicsConfigError, codec_for

    spec = next((s for s in topics_from(args).topics.values() if s.name == topic), None)
    if spec is None:
        return values
    try:
        codec = codec_for(spec, args.schemas_dir)
    except TopicsConfigError as exc:
        raise UsageError(str(exc)) from None
    if not isinstance(codec, AvroWire):
        return values
    decoded: list[bytes] = []
    for value in values:
        try:
            decoded.append(codec.to_json(value))
        except DecodeError:
            decoded.append(value)
    return decoded
