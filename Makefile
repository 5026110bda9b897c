# The two commands a new user needs are `make run` and `make test`; everything else is a step
# of those or a tool for developers. Every target installs what it needs itself.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The compiled core (rust/execcore, PyO3 + maturin): built from source with cargo, crates from
# crates.io as pinned by its Cargo.lock; rebuilt when its sources change.
CORE_STAMP := $(VENV)/.execcore
CORE_SOURCES := $(wildcard rust/execcore/src/*.rs) rust/execcore/Cargo.toml rust/execcore/Cargo.lock rust/execcore/pyproject.toml rust/execcore/execcore.pyi
SAMPLE := examples/decisions.jsonl

.PHONY: broker-loss run test test-unit test-broker lint typecheck check-docs bench bench-compare chaos broker broker-down clean venv

venv: $(STAMP) $(CORE_STAMP)

$(STAMP): requirements.lock pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; install Python 3.11+ or run 'make PYTHON=python3.12 ...'"; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.lock
	$(BIN)/pip install --quiet --no-deps -e .
	@touch $(STAMP)

$(CORE_STAMP): $(STAMP) $(CORE_SOURCES)
	@command -v cargo >/dev/null || { echo "error: cargo not found; the compiled core needs a Rust toolchain (rustup.rs)"; exit 2; }
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/pip install --quiet --no-build-isolation --force-reinstall --no-deps ./rust/execcore
	@touch $(CORE_STAMP)

broker:
	@ops/kafka up

broker-down:
	@ops/kafka down

## run: the main job on its embedded defaults: local broker, topics, the bundled sample, the
## worker until the input is drained, then a summary and an end-to-end check of the outcome.
run: venv broker
	$(BIN)/execworker topics apply
	$(BIN)/execworker produce $(SAMPLE) --topic decisions
	$(BIN)/execworker run --until-drained
	@echo "end-to-end check (committed topic vs. sample vs. outbox):"
	$(BIN)/execworker verify --decisions $(SAMPLE)

## test: the whole suite (unit + real-broker tests); starts a broker if none answers and
## stops it again afterwards.
test: venv
	scripts/with-broker $(BIN)/pytest -q

test-unit: venv
	$(BIN)/pytest -q -m unit

test-broker: venv
	scripts/with-broker $(BIN)/pytest -q -m broker

lint: venv
	$(BIN)/ruff check worker tests bench examples scripts
	$(BIN)/ruff format --check worker tests bench examples scripts

check-docs: venv
	$(BIN)/execworker schemas check

typecheck: venv
	$(BIN)/mypy

bench: venv
	scripts/with-broker $(BIN)/python -m bench.run

## bench-compare: execworker vs Quix Streams exactly-once, the minimal aiokafka exactly-once echo,
## and replay vs a bare orjson loop (bench/compare.py); Quix lives in its own bench-only venv.
BENCH_VENV := .venv-bench
$(BENCH_VENV)/.installed: requirements-bench.lock
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip install --quiet --upgrade pip
	$(BENCH_VENV)/bin/pip install --quiet -r requirements-bench.lock
	@touch $@

bench-compare: venv $(BENCH_VENV)/.installed
	scripts/with-broker $(BIN)/python -m bench.compare --quix-python $(BENCH_VENV)/bin/python

## chaos: the full-size chaos run (10k decisions, 12 partitions, 3 workers, 20 kills, a broker
## restart, venue faults); a private broker is started and stopped by the run itself.
chaos: venv
	$(BIN)/python -m bench.chaos

## broker-loss: a worker run on a private three-broker cluster, undisturbed and with a partition
## leader killed (figures in BENCHMARKS.md); the cluster is started and stopped by the run itself.
broker-loss: venv
	$(BIN)/python -m bench.broker_loss

clean:
	rm -rf var/outbox var/bench

## gates (issue 12): idempotency of the live path, in-process p95 decode -> venue request <= 5 ms,
## performance as a ratio to a reference loop vs bench/gates_baseline.json. Called by .ci/run.
## bench-shadow: the sample against the sandbox with and without a backtest:quote shadow (issue 12):
## throughput cost and parity -> bench/results/shadow.json (BENCHMARKS.md).
.PHONY: bench-shadow
bench-shadow: venv
	scripts/with-broker $(BIN)/python -m bench.shadow --rounds 7 --out bench/results/shadow.json

.PHONY: gates gates-baseline ops-check
gates: venv
	scripts/with-broker $(BIN)/python -m bench.gates

## gates-baseline: record this machine's performance ratio (after a deliberate change in speed).
gates-baseline: venv
	$(BIN)/python -m bench.gates --write-baseline --skip-idempotency

## ops-check: promtool check/test of ops/prometheus/alerts.yml (installs Debian's prometheus if missing).
ops-check:
	@command -v promtool >/dev/null || apt-get install -y -q prometheus >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q prometheus >/dev/null; }
	promtool check rules ops/prometheus/alerts.yml
	promtool test rules ops/prometheus/alerts_test.yml
