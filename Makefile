# The two commands: `make train` and `make test`. Both run the set-up first (idempotent).
CONFIG ?= configs/pong.toml
ARGS ?=

.PHONY: setup train test tensorboard bench-env bench-learner bench-e2e
setup:
	@bash scripts/setup.sh

train: setup
	target/release/wndqn train --config $(CONFIG) $(ARGS)

test: setup
	cargo test --release --workspace

tensorboard: setup
	.venv/bin/tensorboard --logdir runs --bind_all

bench-env: setup
	.venv/bin/python -m pip install -q -r scripts/requirements-bench.txt
	.venv/bin/python scripts/bench_env_vs_envpool.py

bench-learner: setup
	bash scripts/bench_learner_vs_pytorch.sh

bench-e2e: setup
	.venv/bin/python -m pip install -q -r scripts/requirements-bench.txt
	bash scripts/bench_e2e_vs_pytorch.sh
