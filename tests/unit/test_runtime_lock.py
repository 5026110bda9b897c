"""requirements-runtime.lock (the Docker image's, with hashes) agrees with requirements.lock and
covers every runtime dependency of pyproject.toml."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(path: Path) -> dict[str, str]:
    found = re.findall(r"^([A-Za-z0-9_.-]+)==([^\s\\]+)", path.read_text(), re.MULTILINE)
    return {norm(name): version for name, version in found}


def test_runtime_lock_matches_the_dev_lock_and_has_hashes() -> None:
    runtime, dev = pins(ROOT / "requirements-runtime.lock"), pins(ROOT / "requirements.lock")
    assert runtime, "no pins in requirements-runtime.lock"
    for name, version in runtime.items():
        assert dev.get(name) == version, f"{name}: runtime lock {version}, requirements.lock {dev.get(name)}"
    text = (ROOT / "requirements-runtime.lock").read_text()
    blocks = re.split(r"\n(?=[A-Za-z0-9_.-]+==)", text)
    for block in blocks[1:]:
        assert "--hash=sha256:" in block, f"no hash for {block.split()[0]}"
    dev_only = {"pytest", "mypy", "ruff", "hypothesis", "pytest-asyncio", "pytest-timeout"}
    assert not dev_only & set(runtime), "dev tools in the runtime lock"


def test_every_runtime_dependency_is_locked() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = pins(ROOT / "requirements-runtime.lock")
    for requirement in project["dependencies"]:
        name = norm(re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0])
        assert name in runtime, f"{name} (pyproject dependency) is not in requirements-runtime.lock"
