#!/usr/bin/env bash
# Runs side by side on shared cores: `wndqn bench e2e` alone, then N copies at once, for one
# config; prints each copy's env steps/s and updates/s against the lone run's. The goal: each of
# N copies keeps at least 1/N of the lone speed (no collapse of the learner's OpenMP team, no
# starving actors).
#   usage: scripts/bench_side_by_side.sh [N=2] [SECONDS=30] [CONFIG=configs/cartpole.toml] [GAME=CartPole-v1] [--set k=v ...]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-2}; S=${2:-30}; CONFIG=${3:-configs/cartpole.toml}; GAME=${4:-CartPole-v1}
shift $(( $# < 4 ? $# : 4 ))
W=target/release/wndqn
one() { $W --device cpu bench e2e --config "$CONFIG" --game "$GAME" --seconds "$S" "$@" --json 2>/dev/null | tail -n1; }
out=$(mktemp -d)
one "$@" > "$out/alone"
for i in $(seq "$N"); do one "$@" > "$out/side$i" & done
wait
python3 - "$out" "$N" "$CONFIG" <<'PY'
import json, sys, pathlib
d, n, cfg = pathlib.Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
alone = json.loads((d / "alone").read_text())
print(f"{cfg}: alone {alone['env_steps_per_sec']:.0f} env steps/s, {alone['updates_per_sec']:.1f} updates/s")
worst = 1e9
for i in range(1, n + 1):
    r = json.loads((d / f"side{i}").read_text())
    frac = r["updates_per_sec"] / alone["updates_per_sec"]
    worst = min(worst, frac)
    print(f"  copy {i} of {n}: {r['env_steps_per_sec']:.0f} env steps/s, {r['updates_per_sec']:.1f} updates/s = {frac:.2f} of alone (goal >= {1/n:.2f})")
print(f"worst copy: {worst:.2f} of the lone speed, goal {1/n:.2f}: {'met' if worst >= 1/n else 'NOT met'}")
PY
rm -rf "$out"
