"""Executors (backtest, sandbox venue, live) and the engine that turns a decision into events."""
