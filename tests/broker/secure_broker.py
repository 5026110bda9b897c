"""A private SASL_SSL broker with ACLs for the security tests (`EXECWORKER_KAFKA_SECURITY=sasl_ssl
ops/kafka up` on its own state directory and port), started once per session and stopped after.

It never touches the shared broker: its state lives in a temporary directory and it listens on
127.0.0.1:19092 (controller 19093); `KAFKA_BOOTSTRAP_SERVERS` is removed from the environment of
`ops/kafka` so that the script starts this broker instead of reporting on the shared one.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.broker.helpers import ROOT

OPS = str(ROOT / "ops" / "kafka")
SECURE_PORT = 19092


@dataclass(frozen=True)
class SecureBroker:
    home: Path
    bootstrap: str
    client_env: dict[str, str]  # the worker's principal
    admin_env: dict[str, str]  # may also create topics and produce inputs

    def env(self, which: dict[str, str], **overrides: str) -> dict[str, str]:
        """os.environ without any KAFKA_* of the caller, plus `which`, plus overrides."""
        base = {k: v for k, v in os.environ.items() if not k.startswith("KAFKA_")}
        return {**base, **which, "PYTHONUNBUFFERED": "1", **overrides}

    def password(self, user: str) -> str:
        return (self.home / "secrets" / f"{user}.password").read_text().strip()


def parse_env_file(path: Path) -> dict[str, str]:
    """`export KEY=VALUE` lines, as `ops/kafka` writes them for `source`."""
    out: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, _, value = line.removeprefix("export ").partition("=")
        out[key] = value
    return out


def ensure_kcat() -> str:
    """kcat (Debian package `kcat`), installed if missing; fails clearly if it cannot be."""
    found = shutil.which("kcat")
    if found:
        return found
    install = ["apt-get", "install", "-y", "-q", "-o", "DPkg::Lock::Timeout=300", "kcat"]
    if subprocess.run(install, capture_output=True, timeout=600).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], capture_output=True, timeout=600)
        subprocess.run(install, capture_output=True, timeout=600)
    found = shutil.which("kcat")
    if not found:
        pytest.fail("kcat is needed for the SASL_SSL test and could not be installed: apt-get install kcat")
    return found


@pytest.fixture(scope="session")
def secure_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureBroker]:
    home = tmp_path_factory.mktemp("kafka-sasl-ssl")
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAFKA_")}
    env.update(
        EXECWORKER_KAFKA_SECURITY="sasl_ssl",
        EXECWORKER_KAFKA_HOME=str(home),
        EXECWORKER_KAFKA_PORT=str(SECURE_PORT),
        EXECWORKER_KAFKA_HEAP="-Xms128m -Xmx512m",
    )

    def ops(verb: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([OPS, verb], env=env, capture_output=True, text=True, timeout=240)

    up = ops("up")
    try:
        if up.returncode != 0:
            pytest.fail(f"the SASL_SSL broker did not start: {up.stdout}{up.stderr}")
        yield SecureBroker(
            home,
            f"127.0.0.1:{SECURE_PORT}",
            parse_env_file(home / "client.env"),
            parse_env_file(home / "admin.env"),
        )
    finally:
        ops("down")
