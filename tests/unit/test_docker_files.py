"""docker-compose.yml and the Dockerfile hold what users need (CI also runs `docker-compose config`)."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def test_compose_starts_things_in_order_and_publishes_on_loopback() -> None:
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    assert {"kafka", "topics-init", "producer", "sandbox-exchange", "worker", "prometheus", "grafana"} <= set(services)
    assert services["worker"]["depends_on"]["sandbox-exchange"]["condition"] == "service_healthy"
    assert services["worker"]["depends_on"]["topics-init"]["condition"] == "service_completed_successfully"
    assert services["producer"]["depends_on"]["topics-init"]["condition"] == "service_completed_successfully"
    for name in ("kafka", "sandbox-exchange", "worker", "prometheus"):
        assert "healthcheck" in services[name], name
    for name, service in services.items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond the host's loopback"
    readme = (ROOT / "README.md").read_text()
    for port in ("29092", "8765", "9108", "9090", "3000"):
        assert port in readme.split("## Docker", 1)[1], f"host port {port} not in the README's Docker section"


def test_image_has_schemas_and_hashed_runtime_dependencies() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "COPY schemas ./schemas" in dockerfile
    assert "--require-hashes -r requirements-runtime.lock" in dockerfile
    assert "-r requirements.lock" not in dockerfile and "COPY requirements.lock" not in dockerfile


def test_image_builds_the_compiled_core_with_the_pinned_maturin() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    pinned = next(
        line.split("==")[1]
        for line in (ROOT / "requirements.lock").read_text().splitlines()
        if line.startswith("maturin==")
    )
    assert f"ARG MATURIN={pinned}\n" in dockerfile
    assert "COPY --from=core /wheels /wheels" in dockerfile
