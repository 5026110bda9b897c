"""The decisions and market data a report or a diff reads beside the exec-events."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from worker.cli.common import UsageError
from worker.contract.messages import Decision, MarketSnapshot
from worker.reporting.sources import file_digest, read_decisions, read_market


def load_decisions_and_market(
    decisions_path: Path | None, market_path: Path | None, metadata: dict[str, Any]
) -> tuple[dict[str, Decision], list[MarketSnapshot]]:
    """Both files, each optional; their paths and digests go into `metadata`. A missing or
    unreadable file is a usage error that names the flag."""
    decisions: dict[str, Decision] = {}
    market: list[MarketSnapshot] = []
    if decisions_path is not None:
        if not decisions_path.is_file():
            raise UsageError(f"--decisions {decisions_path}: no such file")
        decisions = read_decisions(decisions_path)
        metadata["decisions"] = f"{decisions_path} ({file_digest(decisions_path)})"
    if market_path is not None:
        if not market_path.is_file():
            raise UsageError(f"--market {market_path}: no such file")
        try:
            market = read_market(market_path)
        except ValueError as exc:
            raise UsageError(f"--market {exc}") from None
        metadata["market"] = f"{market_path} ({file_digest(market_path)})"
    return decisions, market
