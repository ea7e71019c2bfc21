#!/usr/bin/env bash
# bf16 against fp32 on the MinAtar network, side by side, interleaved REPEATS times, medians and
# ratios (bf16 / fp32); needs a CPU with AVX512_BF16 or AMX-BF16:
#   1. learner updates/s on one thread, configs/minatar.toml's update, plain and weight_norm:
#      `wndqn bench learner --network minatar --precision bf16|fp32`;
#   2. a run at the learning-rate study's settings on one core (`taskset -c 0`, an update every 4
#      frames, target copy every 250 updates): `wndqn bench e2e --game MinAtar/Breakout-v0`.
#   usage: scripts/bench_minatar_bf16.sh [REPEATS=3] [SECONDS=6]
set -euo pipefail
cd "$(dirname "$0")/.."
R=${1:-3}; S=${2:-6}
W=target/release/wndqn
out=$(mktemp)
grep -m1 'model name' /proc/cpuinfo | sed 's/.*: /cpu: /' >&2
study=(--set learner.replay_ratio=0.25 --set agent.target_update_every=250)
for i in $(seq "$R"); do
    for p in fp32 bf16; do
        for v in plain weight_norm; do
            echo "$p learner $v $($W bench learner --device cpu --network minatar --variant "$v" --threads 1 --precision $p --seconds "$S" --json)" >> "$out"
        done
        echo "$p e2e plain $(taskset -c 0 $W --device cpu bench e2e --game MinAtar/Breakout-v0 --variant plain "${study[@]}" --set "learner.precision=\"$p\"" --seconds $((3 * S)) --json 2>/dev/null | tail -n1)" >> "$out"
    done
done
.venv/bin/python - "$out" <<'PYEOF'
import json, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    p, what, key, js = line.split(" ", 3)
    d = json.loads(js)
    v = d["updates_per_sec"] if what == "learner" else d["env_steps_per_sec"]
    rows.setdefault((what, key), {}).setdefault(p, []).append(v)
print("| what | fp32 (median) | bf16 (median) | bf16 / fp32, each round |")
print("|---|---|---|---|")
for (what, key), r in rows.items():
    unit = "updates/s, 1 thread" if what == "learner" else "env steps/s, 1 core"
    ratios = " / ".join(f"{b / a:.2f}" for a, b in zip(r["fp32"], r["bf16"]))
    print(f"| {what} {key} ({unit}) | {statistics.median(r['fp32']):,.0f} | {statistics.median(r['bf16']):,.0f} | {ratios} |")
PYEOF
