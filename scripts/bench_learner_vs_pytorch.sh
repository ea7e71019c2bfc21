#!/usr/bin/env bash
# Learner throughput, side by side: `wndqn bench learner` (plain and weight_norm) against the
# same update in PyTorch (scripts/bench_learner_reference.py), same thread count, runs
# interleaved, REPEATS times each; prints the medians and the ratios.
#   usage: scripts/bench_learner_vs_pytorch.sh [REPEATS=5] [SECONDS=8] [THREADS=2]
set -euo pipefail
cd "$(dirname "$0")/.."
R=${1:-5}; S=${2:-8}; T=${3:-2}
out=$(mktemp)
for i in $(seq "$R"); do
    for v in plain weight_norm; do
        echo "ours $v $(target/release/wndqn bench learner --device cpu --variant "$v" --seconds "$S" --threads "$T" --json)" >> "$out"
        echo "torch $v $(.venv/bin/python scripts/bench_learner_reference.py --variant "$v" --seconds "$S" --threads "$T")" >> "$out"
    done
done
.venv/bin/python - "$out" <<'PY'
import json, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    impl, variant, js = line.split(" ", 2)
    rows.setdefault((impl, variant), []).append(json.loads(js)["updates_per_sec"])
med = {k: statistics.median(v) for k, v in rows.items()}
print("updates/s, median of %d runs (batch 32, double DQN, Adam, Nature CNN):" % len(next(iter(rows.values()))))
for k in sorted(med):
    print("  %-6s %-12s %6.1f   runs: %s" % (k[0], k[1], med[k], " ".join("%.1f" % x for x in rows[k])))
print("ratio ours/pytorch: plain %.2f, weight_norm %.2f" % (med[("ours", "plain")] / med[("torch", "plain")], med[("ours", "weight_norm")] / med[("torch", "weight_norm")]))
print("weight-norm overhead (ours): %+.1f%%" % (100 * (med[("ours", "plain")] / med[("ours", "weight_norm")] - 1)))
PY
rm -f "$out"
