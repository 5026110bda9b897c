"""The folder layout is the data's path, and the core is pure (issue 11).

contract -> codec, policy -> core -> io -> runtime, sandbox -> reporting -> cli: a module imports
only from its own layer or lower ones. The core decides everything and does no I/O: no `await`,
no network or event-loop module, no wall clock and no global random.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

WORKER = Path(__file__).resolve().parents[2] / "worker"
RANK = {
    "contract": 0,
    "codec": 1,
    "policy": 1,
    "core": 2,
    "io": 3,
    "runtime": 4,
    "sandbox": 4,
    "reporting": 5,
    "cli": 6,
}
NOT_IN_CORE = {"asyncio", "aiohttp", "aiokafka", "socket", "http", "urllib", "requests", "ssl", "random", "datetime"}


def modules(layer: str) -> list[Path]:
    return sorted((WORKER / layer).rglob("*.py"))


def imported(tree: ast.AST) -> list[str]:
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def test_every_package_has_a_layer() -> None:
    packages = {p.name for p in WORKER.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert packages == set(RANK)


@pytest.mark.parametrize("layer", sorted(RANK))
def test_a_layer_imports_only_its_own_or_lower_layers(layer: str) -> None:
    upward = []
    for path in modules(layer):
        for name in imported(ast.parse(path.read_text())):
            parts = name.split(".")
            if parts[0] == "worker" and len(parts) > 1 and parts[1] in RANK and RANK[parts[1]] > RANK[layer]:
                upward.append(f"{path.relative_to(WORKER.parent)} imports {name}")
    assert not upward, "\n".join(upward)


def test_the_core_awaits_nothing_and_imports_no_io_clock_or_random() -> None:
    found = []
    for path in modules("core"):
        tree = ast.parse(path.read_text())
        where = path.relative_to(WORKER.parent)
        found += [f"{where}:{n.lineno} awaits" for n in ast.walk(tree) if isinstance(n, ast.Await | ast.AsyncWith)]
        found += [f"{where} imports {name}" for name in imported(tree) if name.split(".")[0] in NOT_IN_CORE]
        found += [
            f"{where}:{n.lineno} reads the wall clock"
            for n in ast.walk(tree)
            if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id == "time"
        ]
    assert not found, "\n".join(found)
