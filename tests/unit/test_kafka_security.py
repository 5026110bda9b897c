"""KAFKA_* security settings: good combinations give aiokafka options, bad ones say what to fix."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from worker.io.kafka import KafkaConfig
from worker.io.kafka_security import KafkaSecurity, KafkaSecurityError, Secret

SASL = {
    "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
    "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
    "KAFKA_SASL_USERNAME": "worker",
    "KAFKA_SASL_PASSWORD": "s3cret-value",
}


def test_default_is_plaintext() -> None:
    security = KafkaSecurity.from_env({})
    assert security.client_options() == {"security_protocol": "PLAINTEXT"}
    assert security.principal == "User:ANONYMOUS"


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "scram-sha-512"])
def test_sasl_ssl_options(mechanism: str) -> None:
    security = KafkaSecurity.from_env({**SASL, "KAFKA_SASL_MECHANISM": mechanism})
    options = security.client_options()
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == mechanism.upper()
    assert options["sasl_plain_username"] == "worker"
    assert options["sasl_plain_password"] == "s3cret-value"
    assert isinstance(options["ssl_context"], ssl.SSLContext)
    assert security.principal == "User:worker"


def test_password_never_shown() -> None:
    security = KafkaSecurity.from_env(SASL)
    config = KafkaConfig("127.0.0.1:9092", security=security)
    for text in (repr(security), str(security), repr(config), str(security.describe()), str(Secret("x"))):
        assert "s3cret-value" not in text
    assert security.describe()["sasl_password"] == "***"


def test_password_file(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("from-a-file\n")
    env = {**SASL, "KAFKA_SASL_PASSWORD": "", "KAFKA_SASL_PASSWORD_FILE": str(secret)}
    assert KafkaSecurity.from_env(env).client_options()["sasl_plain_password"] == "from-a-file"


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"KAFKA_SECURITY_PROTOCOL": "TLS"}, "use one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL"),
        ({**SASL, "KAFKA_SASL_MECHANISM": ""}, "needs KAFKA_SASL_MECHANISM"),
        ({**SASL, "KAFKA_SASL_MECHANISM": "GSSAPI"}, "KAFKA_SASL_MECHANISM=GSSAPI: use one of PLAIN"),
        ({**SASL, "KAFKA_SASL_USERNAME": ""}, "needs KAFKA_SASL_USERNAME"),
        ({**SASL, "KAFKA_SASL_PASSWORD": ""}, "needs KAFKA_SASL_PASSWORD or KAFKA_SASL_PASSWORD_FILE"),
        ({**SASL, "KAFKA_SASL_PASSWORD_FILE": "/x"}, "keep only one of them"),
        ({**SASL, "KAFKA_SASL_PASSWORD": "", "KAFKA_SASL_PASSWORD_FILE": "/nonexistent/pw"}, "cannot read it"),
        ({**SASL, "KAFKA_SECURITY_PROTOCOL": "SSL"}, "set KAFKA_SECURITY_PROTOCOL=SASL_SSL"),
        ({"KAFKA_SASL_USERNAME": "worker"}, "KAFKA_SECURITY_PROTOCOL=PLAINTEXT"),
        ({"KAFKA_SSL_CAFILE": "/etc/hostname"}, "does not use TLS"),
        ({**SASL, "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "KAFKA_SSL_CAFILE": "/etc/hostname"}, "TLS"),
        ({"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_KEYFILE": "/etc/hostname"}, "needs KAFKA_SSL_CERTFILE"),
        ({"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CAFILE": "/nonexistent/ca.pem"}, "no such file"),
    ],
)
def test_bad_combinations_fail_with_the_fix(env: dict[str, str], says: str) -> None:
    with pytest.raises(KafkaSecurityError, match=None) as caught:
        KafkaSecurity.from_env(env)
    assert says in str(caught.value)
    assert "s3cret-value" not in str(caught.value)


def test_unreadable_ca_says_pem(tmp_path: Path) -> None:
    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate")
    security = KafkaSecurity.from_env({"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CAFILE": str(bad)})
    with pytest.raises(KafkaSecurityError, match="PEM"):
        security.client_options()


def test_kafka_config_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in SASL.items():
        monkeypatch.setenv(key, value)
    assert KafkaConfig("h:1").security.sasl_username == "worker"
    monkeypatch.setenv("KAFKA_SASL_MECHANISM", "NOPE")
    with pytest.raises(KafkaSecurityError):
        KafkaConfig("h:1")
