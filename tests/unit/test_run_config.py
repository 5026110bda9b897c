"""Run settings from flags, EXECWORKER_* env vars and --config files (YAML, TOML): precedence,
errors that name the setting, and `config show` with secrets masked."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from worker.cli.common import UsageError
from worker.cli.config_cmd import effective
from worker.cli.main import build_parser, main
from worker.cli.run_cmd import config_from, settings_from

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith(("EXECWORKER_", "KAFKA_")):
            monkeypatch.delenv(key)


def parse(*argv: str):  # type: ignore[no-untyped-def]
    return build_parser().parse_args(["run", *argv])


def test_defaults_match_the_worker_defaults() -> None:
    settings = settings_from(config_from(parse()))
    assert settings.group_id == "execworker" and settings.transactional_prefix == "execworker"
    assert settings.max_batch == 500 and settings.metrics_port == 9108
    assert settings.bootstrap_servers == "127.0.0.1:9092"
    assert settings.outbox_dir == Path("var/outbox") and not settings.until_drained


def test_env_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXECWORKER_MAX_BATCH", "77")
    monkeypatch.setenv("EXECWORKER_GROUP", "g-env")
    monkeypatch.setenv("EXECWORKER_UNTIL_DRAINED", "true")
    monkeypatch.setenv("EXECWORKER_SYMBOLS", "BTCUSDT, ETHUSDT")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "kafka-1:9092,kafka-2:9092")
    settings = settings_from(config_from(parse()))
    assert settings.max_batch == 77 and settings.group_id == "g-env" and settings.until_drained
    assert settings.symbols == frozenset({"BTCUSDT", "ETHUSDT"})
    assert settings.bootstrap_servers == "kafka-1:9092,kafka-2:9092"
    monkeypatch.setenv("EXECWORKER_BOOTSTRAP_SERVERS", "mine:9092")  # ours before Kafka's
    assert settings_from(config_from(parse())).bootstrap_servers == "mine:9092"


@pytest.mark.parametrize("suffix", [".yaml", ".toml"])
def test_file_settings(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"worker{suffix}"
    if suffix == ".yaml":
        path.write_text("max_batch: 1000\ngroup: g-file\noutbox: /srv/outbox\nsymbols: [BTCUSDT]\n")
    else:
        path.write_text('max_batch = 1000\ngroup = "g-file"\noutbox = "/srv/outbox"\nsymbols = ["BTCUSDT"]\n')
    settings = settings_from(config_from(parse("--config", str(path))))
    assert settings.max_batch == 1000 and settings.group_id == "g-file"
    assert settings.outbox_dir == Path("/srv/outbox") and settings.symbols == frozenset({"BTCUSDT"})


def test_flags_win_over_env_which_wins_over_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "worker.yaml"
    path.write_text("max_batch: 1000\ngroup: g-file\nseed: 3\n")
    monkeypatch.setenv("EXECWORKER_CONFIG", str(path))
    monkeypatch.setenv("EXECWORKER_MAX_BATCH", "200")
    monkeypatch.setenv("EXECWORKER_GROUP", "g-env")
    settings = settings_from(config_from(parse("--max-batch", "50")))
    assert settings.max_batch == 50  # flag > env > file
    assert settings.group_id == "g-env"  # env > file
    assert settings.seed == 3  # file > default


@pytest.mark.parametrize(
    ("content", "says"),
    [
        ("max_bach: 3\n", "unknown setting `max_bach`"),
        ("max_batch: lots\n", "--max-batch, $EXECWORKER_MAX_BATCH or `max_batch` in"),
        ("max_batch: [\n", "cannot parse it"),
    ],
)
def test_bad_file_says_what_to_fix(tmp_path: Path, content: str, says: str) -> None:
    path = tmp_path / "worker.yaml"
    path.write_text(content)
    with pytest.raises(UsageError, match=None) as caught:
        config_from(parse("--config", str(path)))
    assert says in str(caught.value)


def test_missing_or_unknown_kind_of_file(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no such file"):
        config_from(parse("--config", str(tmp_path / "absent.yaml")))
    with pytest.raises(UsageError, match=r"\.yaml, \.yml or \.toml"):
        config_from(parse("--config", str(tmp_path / "worker.ini")))


def test_bad_env_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXECWORKER_METRICS_PORT", "http")
    with pytest.raises(UsageError, match="EXECWORKER_METRICS_PORT"):
        config_from(parse())


def test_config_show_masks_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("EXECWORKER_API_KEY", "key-value-123")
    monkeypatch.setenv("EXECWORKER_API_SECRET", "secret-value-456")
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("KAFKA_SASL_MECHANISM", "SCRAM-SHA-256")
    monkeypatch.setenv("KAFKA_SASL_USERNAME", "worker")
    monkeypatch.setenv("KAFKA_SASL_PASSWORD", "kafka-password-789")
    monkeypatch.setenv("EXECWORKER_MAX_BATCH", "64")
    assert main(["config", "show", "--group", "g-flag"]) == 0
    out = capsys.readouterr().out
    for secret in ("key-value-123", "secret-value-456", "kafka-password-789"):
        assert secret not in out
    shown = yaml.safe_load(out)
    assert shown["run"]["group"] == "g-flag" and shown["run"]["max_batch"] == 64
    assert shown["kafka_security"]["sasl_password"] == "***"
    assert shown["kafka_security"]["sasl_username"] == "worker"
    assert shown["venue_credentials"]["EXECWORKER_API_SECRET"] == "***"
    assert effective(build_parser().parse_args(["config", "show"]))["run"]["transactional_prefix"] == "execworker"


def test_config_show_lists_the_effective_rollout_rules(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    modes = tmp_path / "modes.yaml"
    base = (ROOT / "examples" / "modes.yaml").read_text(encoding="utf-8")
    modes.write_text(base + "\nrules:\n  warmup: observe\n", encoding="utf-8")
    assert main(["config", "show", "--modes", str(modes)]) == 0
    rules = yaml.safe_load(capsys.readouterr().out)["rules"]
    assert rules == ["modes day, night, storm: warmup=observe (others enforce)"]
