#!/usr/bin/env bash
# Learner throughput, side by side: `wndqn bench learner` (plain and weight_norm) against the
# same update in PyTorch (scripts/bench_learner_reference.py), same thread count, runs
# interleaved, REPEATS times each, in fp32 and, where the CPU computes bf16 natively, in bf16
# (ours: `--precision bf16`; PyTorch: autocast to bf16 with channels-last convolutions, its
# fastest bf16 set-up here). Then weight norm's cost over plain, measured in one process with
# the two networks' updates taking turns (`bench learner --vs`). Prints medians and ratios.
#   usage: scripts/bench_learner_vs_pytorch.sh [REPEATS=5] [SECONDS=8] [THREADS=2] [PRECISIONS="fp32 bf16"]
set -euo pipefail
cd "$(dirname "$0")/.."
R=${1:-5}; S=${2:-8}; T=${3:-2}
if [ -n "${4:-}" ]; then P=$4
elif grep -qwE 'avx512_bf16|amx_bf16' /proc/cpuinfo; then P="fp32 bf16"
else P="fp32"; echo "this CPU has no native bf16: fp32 only" >&2; fi
W=target/release/wndqn
out=$(mktemp)
for i in $(seq "$R"); do
    for p in $P; do
        torch_flags=""; [ "$p" = bf16 ] && torch_flags="--precision bf16 --channels-last"
        for v in plain weight_norm; do
            echo "ours $p $v $($W bench learner --device cpu --variant "$v" --precision "$p" --seconds "$S" --threads "$T" --json)" >> "$out"
            # shellcheck disable=SC2086
            echo "torch $p $v $(.venv/bin/python scripts/bench_learner_reference.py --variant "$v" --seconds "$S" --threads "$T" $torch_flags)" >> "$out"
        done
    done
done
for p in $P; do
    echo "pair $p weight_norm $($W bench learner --device cpu --variant weight_norm --vs plain --precision "$p" --seconds $((4 * S)) --threads "$T" --json)" >> "$out"
done
.venv/bin/python - "$out" <<'PY'
import json, statistics, sys
rows, pairs = {}, {}
for line in open(sys.argv[1]):
    impl, prec, variant, js = line.split(" ", 3)
    if impl == "pair":
        pairs[prec] = json.loads(js)
    else:
        rows.setdefault((impl, prec, variant), []).append(json.loads(js)["updates_per_sec"])
med = {k: statistics.median(v) for k, v in rows.items()}
print("updates/s, median of %d runs (batch 32, double DQN, Adam, Nature CNN):" % len(next(iter(rows.values()))))
for k in sorted(med):
    print("  %-6s %-5s %-12s %6.1f   runs: %s" % (k[0], k[1], k[2], med[k], " ".join("%.1f" % x for x in rows[k])))
precs = sorted({k[1] for k in med}, key=lambda p: p != "fp32")
for p in precs:
    print("%s, ours / PyTorch: plain %.2fx, weight_norm %.2fx" % (p, med[("ours", p, "plain")] / med[("torch", p, "plain")], med[("ours", p, "weight_norm")] / med[("torch", p, "weight_norm")]))
if "bf16" in precs:
    print("ours bf16 / ours fp32: plain %.2fx, weight_norm %.2fx" % tuple(med[("ours", "bf16", v)] / med[("ours", "fp32", v)] for v in ("plain", "weight_norm")))
    print("ours bf16 / PyTorch fp32: plain %.2fx, weight_norm %.2fx" % tuple(med[("ours", "bf16", v)] / med[("torch", "fp32", v)] for v in ("plain", "weight_norm")))
for p in precs:
    if p in pairs:
        x = pairs[p]
        print("weight-norm overhead (ours, %s, updates in turn): %+.1f%% (%.2f vs %.2f ms per update, %d each)" % (p, 100 * (x["ratio"] - 1), x["median_ms"], x["vs_median_ms"], x["updates_each"]))
PY
rm -f "$out"
