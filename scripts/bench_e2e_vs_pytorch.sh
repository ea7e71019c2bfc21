#!/usr/bin/env bash
# Whole-system throughput on Pong (replay ratio 0.25, batch 32, double DQN, Adam), side by side:
# `wndqn bench e2e` (2 actor threads + learner, plain and weight_norm) against a single-process
# PyTorch loop in CleanRL's dqn_atari.py design (scripts/bench_e2e_reference.py), interleaved,
# REPEATS times; prints medians and ratios.   usage: scripts/bench_e2e_vs_pytorch.sh [REPEATS=3] [SECONDS=60]
set -euo pipefail
cd "$(dirname "$0")/.."
R=${1:-3}; S=${2:-60}
out=$(mktemp)
for i in $(seq "$R"); do
    for v in weight_norm plain; do
        echo "ours $v $(target/release/wndqn bench e2e --device cpu --game Pong --variant "$v" --seconds "$S" --set replay.warmup_steps=20000 --json)" >> "$out"
    done
    echo "torch plain $(.venv/bin/python scripts/bench_e2e_reference.py --seconds "$S")" >> "$out"
done
.venv/bin/python - "$out" <<'PY'
import json, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    impl, variant, js = line.split(" ", 2)
    rows.setdefault((impl, variant), []).append(json.loads(js))
print("Pong, env steps/s and updates/s after warm-up, median of %d runs:" % len(next(iter(rows.values()))))
med = {}
for k, v in sorted(rows.items()):
    sps = statistics.median(x["env_steps_per_sec"] for x in v)
    ups = statistics.median(x["updates_per_sec"] for x in v)
    med[k] = sps
    extra = ""
    if "actor_wait_frac" in v[0]:
        extra = "  actors waiting %.0f%%, learner busy %.0f%%, learner waiting %.0f%%" % tuple(
            100 * statistics.median(x[f] for x in v) for f in ("actor_wait_frac", "learner_busy_frac", "learner_wait_frac"))
    print("  %-6s %-12s %7.1f env steps/s %6.1f updates/s%s" % (k[0], k[1], sps, ups, extra))
t = med[("torch", "plain")]
print("ratio vs PyTorch loop: weight_norm %.2fx, plain %.2fx" % (med[("ours", "weight_norm")] / t, med[("ours", "plain")] / t))
PY
rm -f "$out"
