"""Every `execworker run` setting from flags, `EXECWORKER_*` env vars or `--config FILE`.

Precedence, highest first: a flag given on the command line; an environment variable
(`EXECWORKER_<FIELD>`, e.g. `EXECWORKER_MAX_BATCH=1000`; the bootstrap servers also from
`KAFKA_BOOTSTRAP_SERVERS`); the config file (YAML `.yaml`/`.yml` or TOML `.toml`, the same field
names, e.g. `max_batch: 1000`; `--config` or `EXECWORKER_CONFIG`); the defaults below. Unknown keys
and bad values are refused with the setting's name. Kafka's TLS/SASL settings stay in `KAFKA_*`
(worker/io/kafka_security.py) and venue keys in `EXECWORKER_API_*`: secrets are never file settings
here, and `config show` masks them.
"""

from __future__ import annotations

import argparse
import os
import tomllib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import AliasChoices, Field, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
    YamlConfigSettingsSource,
)

from worker.io.kafka import BOOTSTRAP_ENV, DEFAULT_BOOTSTRAP
from worker.runtime.orderlog import DEFAULT_SAMPLE_PASS

ENV_PREFIX = "EXECWORKER_"
CONFIG_ENV = "EXECWORKER_CONFIG"


class ConfigError(ValueError):
    """A setting or the config file is wrong; the message names it and says what to fix."""


class RunConfig(BaseSettings):
    """The run settings as the operator gives them (flags, env, file); `WorkerSettings` is what
    the worker gets after they are combined and checked."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", frozen=True, populate_by_name=True)

    bootstrap_servers: str = Field(
        default=DEFAULT_BOOTSTRAP,
        validation_alias=AliasChoices(f"{ENV_PREFIX}BOOTSTRAP_SERVERS", BOOTSTRAP_ENV),
    )
    topics: Path = Path("topics.yaml")
    schemas_dir: Path = Path("schemas")
    group: str = "execworker"
    transactional_prefix: str | None = None  # None: the group
    instance_id: str | None = None
    session_timeout_ms: int = 10_000
    recv_window_ms: int = 5_000
    input_partitioner: str = "murmur2"
    outbox: Path = Path("var/outbox")
    outbox_grace_ms: int = 60_000
    executor: str = "backtest"
    seed: int = 0
    modes: Path | None = None
    venue_url: str | None = None
    venue_timeout_s: float = 2.0
    venue_grid: Literal["deny", "venue", "off"] = "deny"
    reconcile_interval_ms: int = 1_000
    max_batch: int = 500
    poll_timeout_ms: int = 100
    commit_interval_ms: int = 0
    symbols: str | None = None  # comma-separated allow-list (a list in a file is accepted too)
    until_drained: bool = False
    broker_wait_s: float = 60.0
    metrics_port: int = 9108
    metrics_host: str = "127.0.0.1"
    log_sample_pass: float = DEFAULT_SAMPLE_PASS  # passed orders with an order log line (failures: all)
    # Shadow execution (issue 12): `backtest:MODEL` or `venue:URL`; None runs no shadow.
    shadow: str | None = None
    shadow_timeout_s: float = 0.5  # the most the shadow may add to a batch's send

    @field_validator("symbols", mode="before")
    @classmethod
    def _symbols(cls, value: Any) -> Any:
        if isinstance(value, list | tuple):
            return ",".join(str(v) for v in value)
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = _CONFIG_FILE.get("path")
        if path is not None:
            if path.suffix == ".toml":
                sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
            else:
                sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=path))
        return tuple(sources)


# The file of the load in progress: pydantic-settings builds sources per class, not per call.
_CONFIG_FILE: dict[str, Path | None] = {"path": None}


def load_run_config(flags: dict[str, Any], config_file: Path | None = None) -> RunConfig:
    """Flags given on the command line (only those) over env over the file over defaults."""
    path = config_file or (Path(os.environ[CONFIG_ENV]) if os.environ.get(CONFIG_ENV) else None)
    if path is not None:
        _check_file(path)
    _CONFIG_FILE["path"] = path
    try:
        return RunConfig(**flags)
    except ValidationError as exc:
        raise ConfigError(_explain(exc, path)) from None
    except (yaml.YAMLError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"--config {path}: cannot parse it ({exc})") from None
    finally:
        _CONFIG_FILE["path"] = None


def _check_file(path: Path) -> None:
    if path.suffix not in (".yaml", ".yml", ".toml"):
        raise ConfigError(f"--config {path}: use a .yaml, .yml or .toml file")
    if not path.is_file():
        raise ConfigError(f"--config {path}: no such file")


def _explain(exc: ValidationError, path: Path | None) -> str:
    problems = []
    for error in exc.errors():
        name = ".".join(str(p) for p in error["loc"]) or "?"
        flag = "--" + name.replace("_", "-")
        where = f"{flag}, ${ENV_PREFIX}{name.upper()}" + (f" or `{name}` in {path}" if path else "")
        if error["type"] == "extra_forbidden":
            problems.append(f"unknown setting `{name}`{f' in {path}' if path else ''}; see `execworker run --help`")
        else:
            problems.append(f"{where}: {error['msg']} (got {error.get('input')!r})")
    return "; ".join(problems)


def add_config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        help=f"settings file (.yaml/.toml; default ${CONFIG_ENV}); flags win over ${ENV_PREFIX}*, env over the file",
    )


def given_flags(args: argparse.Namespace) -> dict[str, Any]:
    """The RunConfig fields that were given as flags (their argparse default is SUPPRESS)."""
    return {name: value for name, value in vars(args).items() if name in RunConfig.model_fields}


def suppress_defaults(parser: argparse.ArgumentParser) -> None:
    """Makes every RunConfig flag absent from the namespace unless given, so that env and file
    settings can apply; the help text keeps showing the default from RunConfig."""
    for action in parser._actions:
        field = RunConfig.model_fields.get(action.dest)
        if field is not None:
            action.default = argparse.SUPPRESS
            if action.help and "default" not in action.help and field.default not in (None, False):
                action.help += f" (default: {field.default})"
