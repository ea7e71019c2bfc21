#!/usr/bin/env bash
# Whole-system throughput on Pong (replay ratio 0.25, batch 32, double DQN, Adam), side by side:
# `wndqn bench e2e` (2 actor threads + learner, plain and weight_norm) against a single-process
# PyTorch loop in CleanRL's dqn_atari.py design (scripts/bench_e2e_reference.py), interleaved,
# REPEATS times; in fp32 and, where the CPU computes bf16 natively, with the learner in bf16
# (ours: learner.precision = "bf16"; the PyTorch loop: autocast to bf16, channels-last). Prints
# medians and ratios.
#   usage: scripts/bench_e2e_vs_pytorch.sh [REPEATS=3] [SECONDS=60] [PRECISIONS="fp32 bf16"]
set -euo pipefail
cd "$(dirname "$0")/.."
R=${1:-3}; S=${2:-60}
if [ -n "${3:-}" ]; then P=$3
elif grep -qwE 'avx512_bf16|amx_bf16' /proc/cpuinfo; then P="fp32 bf16"
else P="fp32"; echo "this CPU has no native bf16: fp32 only" >&2; fi
out=$(mktemp)
for i in $(seq "$R"); do
    for p in $P; do
        for v in weight_norm plain; do
            echo "ours $p $v $(target/release/wndqn bench e2e --device cpu --game Pong --variant "$v" --seconds "$S" --set replay.warmup_steps=20000 --set learner.precision="$p" --json)" >> "$out"
        done
        echo "torch $p plain $(.venv/bin/python scripts/bench_e2e_reference.py --seconds "$S" --precision "$p")" >> "$out"
    done
done
.venv/bin/python - "$out" <<'PY'
import json, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    impl, prec, variant, js = line.split(" ", 3)
    rows.setdefault((impl, prec, variant), []).append(json.loads(js))
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
    print("  %-6s %-5s %-12s %7.1f env steps/s %6.1f updates/s%s" % (k[0], k[1], k[2], sps, ups, extra))
precs = sorted({k[1] for k in med}, key=lambda p: p != "fp32")
for p in precs:
    t = med[("torch", p, "plain")]
    print("%s, ours / the PyTorch loop in %s: weight_norm %.2fx, plain %.2fx" % (p, p, med[("ours", p, "weight_norm")] / t, med[("ours", p, "plain")] / t))
if "bf16" in precs:
    t = med[("torch", "fp32", "plain")]
    print("ours in bf16 / the PyTorch loop in fp32: weight_norm %.2fx, plain %.2fx" % (med[("ours", "bf16", "weight_norm")] / t, med[("ours", "bf16", "plain")] / t))
PY
rm -f "$out"
