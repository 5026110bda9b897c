"""The whole path over SASL_SSL with ACLs, on a private secured broker (tests/broker/secure_broker.py).

The admin principal creates the topics and produces the decisions; the worker principal runs the
worker; the exec-events are read back by `execworker verify` (admin) and by kcat, a client nobody
here wrote. A wrong password, a group and a transactional id outside the worker's ACLs each fail
fast with a message that says what to fix, and never print the password.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from pathlib import Path

import orjson
import pytest

from examples.gen_decisions import decisions
from tests.broker.helpers import ROOT, cli
from tests.broker.secure_broker import SecureBroker, ensure_kcat
from worker.io.topics import load_topics, write_variant

pytestmark = pytest.mark.timeout(600)


def run(args: list[str], env: dict[str, str], timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def secured_topics(secure_broker: SecureBroker, tmp_path: Path) -> Path:
    """A private topics file (names `<name>.<suffix>`: inside the ACLs' prefixes), applied by admin."""
    path = tmp_path / "topics.yaml"
    write_variant(ROOT / "topics.yaml", path, uuid.uuid4().hex[:8], partitions=3)
    applied = run(cli("topics", "apply", "--topics", str(path)), secure_broker.env(secure_broker.admin_env))
    assert applied.returncode == 0, applied.stderr
    return path


def test_whole_path_over_sasl_ssl_with_acls(secure_broker: SecureBroker, secured_topics: Path, tmp_path: Path) -> None:
    admin = secure_broker.env(secure_broker.admin_env)
    worker = secure_broker.env(secure_broker.client_env)
    assert worker["KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL" and worker["KAFKA_SASL_USERNAME"] == "worker"
    sample = tmp_path / "decisions.jsonl"
    sample.write_bytes(b"".join(orjson.dumps(d) + b"\n" for d in decisions(300, seed=13)))
    topics = ["--topics", str(secured_topics)]

    produced = run(cli("produce", str(sample), "--topic", "decisions", *topics), admin)
    assert produced.returncode == 0, produced.stderr
    # The worker principal may not produce inputs: only admin may.
    refused = run(cli("produce", str(sample), "--topic", "decisions", *topics), worker)
    assert refused.returncode != 0

    outbox = tmp_path / "outbox"
    group = f"execworker-{uuid.uuid4().hex[:8]}"
    ran = run(
        cli("run", "--until-drained", "--group", group, "--outbox", str(outbox), "--metrics-port", "0", *topics),
        worker,
    )
    assert ran.returncode == 0, ran.stderr
    assert "exec-events             300" in ran.stdout or "300" in ran.stdout

    verified = run(cli("verify", "--decisions", str(sample), "--outbox", str(outbox), *topics), admin)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "FAIL" not in verified.stdout

    # kcat (librdkafka) reads the committed exec-events over SASL_SSL. PLAIN, because Debian's
    # kcat links librdkafka 2.0.2, whose SCRAM is refused by Kafka 4.x brokers (fixed in 2.6.1).
    kcat = ensure_kcat()
    conf = tmp_path / "kcat.conf"
    conf.touch(mode=0o600)
    conf.write_text(
        f"bootstrap.servers={secure_broker.bootstrap}\n"
        "security.protocol=SASL_SSL\nsasl.mechanisms=PLAIN\nsasl.username=admin\n"
        f"sasl.password={secure_broker.password('admin')}\n"
        f"ssl.ca.location={secure_broker.admin_env['KAFKA_SSL_CAFILE']}\n"
        "isolation.level=read_committed\n"
    )
    exec_topic = load_topics(secured_topics).role("exec_events").name
    read = run([kcat, "-F", str(conf), "-C", "-t", exec_topic, "-e", "-q", "-f", "%s\n"], admin, timeout=60)
    assert read.returncode == 0, read.stderr
    events = [orjson.loads(line) for line in read.stdout.splitlines() if line.startswith("{")]
    assert len(events) == 300
    assert {e["signal_row_id"] for e in events} == {d["signal_row_id"] for d in decisions(300, seed=13)}
    outbox_lines = sorted(p.read_bytes() for p in (outbox / "ready").rglob("*.jsonl"))
    assert sum(len(b.splitlines()) for b in outbox_lines) == 300


def test_wrong_password_fails_fast_and_says_what_to_fix(secure_broker: SecureBroker, secured_topics: Path) -> None:
    wrong = "not-the-password-" + uuid.uuid4().hex
    env = secure_broker.env(secure_broker.client_env, KAFKA_SASL_PASSWORD=wrong)
    del env["KAFKA_SASL_PASSWORD_FILE"]
    started = time.monotonic()
    result = run(cli("run", "--until-drained", "--metrics-port", "0", "--topics", str(secured_topics)), env)
    assert time.monotonic() - started < 30
    assert result.returncode == 2, result.stderr
    assert "authentication failed" in result.stderr and "User:worker" in result.stderr
    assert "KAFKA_SASL_PASSWORD" in result.stderr
    assert wrong not in result.stderr + result.stdout


def test_group_outside_the_acls_fails_fast(secure_broker: SecureBroker, secured_topics: Path, tmp_path: Path) -> None:
    env = secure_broker.env(secure_broker.client_env)
    args = ["run", "--until-drained", "--metrics-port", "0", "--topics", str(secured_topics)]
    result = run(cli(*args, "--group", "intruder", "--outbox", str(tmp_path / "a")), env, timeout=60)
    assert result.returncode == 2, result.stderr
    assert "User:worker may not use the consumer group 'intruder'" in result.stderr
    assert "Traceback" not in result.stderr

    prefix = run(
        cli(*args, "--group", "execworker-ok", "--transactional-prefix", "other", "--outbox", str(tmp_path / "b")),
        env,
        timeout=60,
    )
    assert prefix.returncode == 2, prefix.stderr
    assert "may not use its transactional ids ('other-p0')" in prefix.stderr


def test_worker_principal_may_not_create_topics(secure_broker: SecureBroker, tmp_path: Path) -> None:
    path = tmp_path / "topics.yaml"
    write_variant(ROOT / "topics.yaml", path, uuid.uuid4().hex[:8], partitions=1)
    result = run(cli("topics", "apply", "--topics", str(path)), secure_broker.env(secure_broker.client_env))
    assert result.returncode == 2
    assert "refused (Kafka ACLs" in result.stderr and "admin principal" in result.stderr
