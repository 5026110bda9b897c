"""The HTML report rendered by a real browser (Debian's headless Chromium): no console output at
all (no error, no warning), and every Plotly figure drawn."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

ROOT = Path(__file__).resolve().parents[2]
FIGURES = (
    "fig-shortfall",
    "fig-markouts",
    "fig-fill-rate",
    "fig-time-to-fill",
    "fig-pnl",
    "fig-position",
    "fig-latency",
)


@pytest.fixture(scope="module")
def chromium() -> str:
    """Installs Chromium when missing (scripts/ensure-chromium); fails, never skips, if it cannot."""
    found = subprocess.run([ROOT / "scripts/ensure-chromium"], capture_output=True, text=True, timeout=900)
    if found.returncode != 0:
        pytest.fail(f"chromium is needed for this test and could not be installed: {found.stderr}")
    return found.stdout.strip().splitlines()[-1]


def render(chromium: str, page: Path, profile: Path) -> tuple[str, list[str]]:
    """The DOM after scripts ran, and every console message the page logged."""
    result = subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={profile}",
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=10000",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    console = [line for line in result.stderr.splitlines() if ":CONSOLE" in line]
    return result.stdout, console


def cli(*args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "worker", *args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.mark.timeout(1_200)  # the first use may install Chromium (scripts/ensure-chromium)
def test_the_report_page_renders_in_chromium_without_console_output(chromium: str, tmp_path: Path) -> None:
    sample = tmp_path / "decisions.jsonl"
    sample.write_text("".join((ROOT / "examples/decisions.jsonl").read_text().splitlines(keepends=True)[:800]))
    out = tmp_path / "run"
    cli(
        "replay",
        "--from-file",
        str(sample),
        "--market",
        "examples/market.jsonl",
        "--fill-model",
        "quote",
        "--out",
        str(out),
    )
    page, parquet = tmp_path / "report.html", tmp_path / "orders.parquet"
    printed = cli(
        "report",
        "--outbox",
        str(out),
        "--html",
        str(page),
        "--parquet",
        str(parquet),
        "--json",
        str(tmp_path / "r.json"),
    )
    assert f"wrote {page}" in printed
    assert pq.read_table(parquet).num_rows == 800

    dom, console = render(chromium, page, tmp_path / "profile")
    assert console == []
    # Plotly drew every figure: each container holds its SVG.
    for figure in FIGURES:
        drawn = re.search(rf'<div id="{figure}"[^>]*class="[^"]*js-plotly-plot', dom)
        assert drawn, f"{figure} was not drawn"
    assert dom.count('class="main-svg"') >= len(FIGURES)
    # The run's metadata (from the replay's run.json) and open orders as open.
    assert "run.digest" in dom and "run.fill_model" in dom and "still open" in dom


@pytest.mark.timeout(1_200)
def test_the_console_check_catches_a_page_error(chromium: str, tmp_path: Path) -> None:
    page = tmp_path / "bad.html"
    page.write_text("<html><body><script>console.error('boom'); undefinedFunction();</script></body></html>")
    _, console = render(chromium, page, tmp_path / "profile")
    assert any("boom" in line for line in console) and any("undefinedFunction" in line for line in console)
