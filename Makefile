# Canopy: `make demo` runs a local seed with three simulated leaf clusters; `make test` runs
# every check CI runs. Both install what is missing first (scripts/setup).

CARGO ?= cargo
BENCH_ARGS ?= --clusters 4 --events 200000
AUDIT_BENCH_ARGS ?= --objects 100000 --checkov-objects 1000
COMMANDS_BENCH_ARGS ?= --clusters 1000 --round-trips 300

.PHONY: setup build demo test fmt lint bench clean

setup:
	@bash scripts/setup

build: setup
	$(CARGO) build --workspace --bins

demo: build
	@exec ./target/debug/canopy-demo

fmt:
	$(CARGO) fmt --all

lint: setup
	$(CARGO) fmt --all --check
	bash k8s/sync-nats-config.sh --check
	.tools/venv/bin/python k8s/check.py
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

test: lint
	$(CARGO) build --workspace --bins --locked
	$(CARGO) test --workspace --locked

bench:
	@bash scripts/setup --bench
	$(CARGO) build --release --locked --workspace --bins
	./target/release/loadtest pipeline $(BENCH_ARGS)
	./target/release/loadtest audit $(AUDIT_BENCH_ARGS)
	./target/release/loadtest commands $(COMMANDS_BENCH_ARGS)
	./target/release/loadtest doctor $(DOCTOR_BENCH_ARGS)

clean:
	rm -rf .state target
