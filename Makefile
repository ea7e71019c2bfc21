# The two commands: `make train` and `make test`. Both run the set-up first (idempotent).
CONFIG ?= configs/pong.toml
ARGS ?=

.PHONY: setup train test lint tensorboard bench-env bench-learner bench-e2e bench-side-by-side bench-minatar
setup:
	@bash scripts/setup.sh

train: setup
	target/release/wndqn train --config $(CONFIG) $(ARGS)

test: setup lint
	cargo test --release --workspace --features wndqn/fault-injection

# Formatting, lints (clippy also holds the code to the minimum Rust version, and functions
# outside tests to 80 lines: clippy.toml), unused
# dependencies and every dependency's own minimum Rust version, as CI checks them (part of
# `make test`).
lint: setup
	cargo fmt --all --check
	cargo clippy --release --workspace --all-targets --features wndqn/fault-injection --quiet -- -D warnings
	cargo clippy --release --workspace --quiet -- -D warnings -D clippy::too_many_lines
	cargo machete
	cargo metadata --format-version 1 --locked --filter-platform x86_64-unknown-linux-gnu | python3 scripts/check_msrv.py

tensorboard: setup
	.venv/bin/tensorboard --logdir runs --bind_all

bench-env: setup
	.venv/bin/python -m pip install -q -r scripts/requirements-bench.txt
	.venv/bin/python scripts/bench_env_vs_envpool.py

bench-learner: setup
	bash scripts/bench_learner_vs_pytorch.sh

bench-side-by-side: setup
	bash scripts/bench_side_by_side.sh 2 30 configs/cartpole.toml CartPole-v1
	bash scripts/bench_side_by_side.sh 2 40 configs/pong.toml Pong --set replay.warmup_steps=5000 --set replay.capacity=100000

bench-e2e: setup
	.venv/bin/python -m pip install -q -r scripts/requirements-bench.txt
	bash scripts/bench_e2e_vs_pytorch.sh

bench-minatar: setup
	bash scripts/bench_minatar.sh
	bash scripts/bench_side_by_side.sh 2 30 configs/minatar.toml MinAtar/Breakout-v0
