#!/usr/bin/env bash
# The MinAtar study's cost, two wndqn binaries side by side (A B B A ... rounds, medians and
# per-round ratios): the learner on one thread (`bench learner --network minatar`: the preset's
# update, centered RMSProp without double DQN; and double DQN with Adam) and a whole run at the
# learning-rate study's settings on one core (`taskset -c 0 wndqn bench e2e --game
# MinAtar/Breakout-v0 --set learner.replay_ratio=0.25 --set agent.target_update_every=250`);
# and, part `pair`, two such runs at once on the machine's cores, as `sweep run --jobs 2` runs
# them (Breakout plain and Seaquest weight_norm, unpinned; their env steps/s summed).
#   usage: scripts/bench_minatar_study.sh BIN_A BIN_B [ROUNDS=3] [SECONDS=6] [PARTS="learner e2e"]
set -euo pipefail
cd "$(dirname "$0")/.."
A=$1; B=$2; R=${3:-3}; S=${4:-6}; P=" ${5:-learner e2e} "
out=$(mktemp)
grep -m1 'model name' /proc/cpuinfo | sed 's/.*: /cpu: /' >&2
DOUBLE=(--set agent.double_dqn=true --set agent.optimizer=adam --set agent.lr=1e-4 --set agent.grad_clip_norm=10)
STUDY=(--set learner.replay_ratio=0.25 --set agent.target_update_every=250)
one() { # who bin
    local who=$1 bin=$2
    if [[ $P == *" learner "* ]]; then
        echo "$who learner preset $($bin --device cpu bench learner --network minatar --variant plain --threads 1 --seconds "$S" --json)" >> "$out"
        echo "$who learner double_adam $($bin --device cpu bench learner --network minatar --variant plain --threads 1 --seconds "$S" "${DOUBLE[@]}" --json)" >> "$out"
    fi
    if [[ $P == *" e2e "* ]]; then
        echo "$who e2e study $(taskset -c 0 "$bin" --device cpu bench e2e --game MinAtar/Breakout-v0 --variant plain --seconds $((3 * S)) "${STUDY[@]}" --json 2>/dev/null | tail -n1)" >> "$out"
    fi
    if [[ $P == *" pair "* ]]; then
        local one two
        one=$(mktemp); two=$(mktemp)
        "$bin" --device cpu bench e2e --game MinAtar/Breakout-v0 --variant plain --seconds $((3 * S)) "${STUDY[@]}" --json 2>/dev/null | tail -n1 > "$one" &
        "$bin" --device cpu bench e2e --game MinAtar/Seaquest-v0 --variant weight_norm --seconds $((3 * S)) "${STUDY[@]}" --json 2>/dev/null | tail -n1 > "$two" &
        wait
        echo "$who e2e two_at_once $(python3 -c 'import json, sys; print(json.dumps({"env_steps_per_sec": sum(json.load(open(f))["env_steps_per_sec"] for f in sys.argv[1:])}))' "$one" "$two")" >> "$out"
        rm -f "$one" "$two"
    fi
}
for i in $(seq "$R"); do
    if (( i % 2 )); then one A "$A"; one B "$B"; else one B "$B"; one A "$A"; fi
done
python3 - "$out" <<'PYEOF'
import json, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    who, what, key, js = line.split(" ", 3)
    d = json.loads(js)
    v = d["updates_per_sec"] if what == "learner" else d["env_steps_per_sec"]
    rows.setdefault((what, key), {}).setdefault(who, []).append((v, d))
print(f"{'what':<8} {'case':<12} {'A':>9} {'B':>9} {'B/A':>6}   per-round B/A; B's share of its products' rate")
for (what, key), d in rows.items():
    a, b = [x[0] for x in d["A"]], [x[0] for x in d["B"]]
    r = [y / x for x, y in zip(a, b)]
    frac = [x[1].get("fraction_of_products_rate") for x in d["B"]]
    extra = f"; {statistics.median(frac):.0%}" if all(f is not None for f in frac) else ""
    unit = "updates/s" if what == "learner" else "env steps/s"
    print(f"{what:<8} {key:<12} {statistics.median(a):>9.0f} {statistics.median(b):>9.0f} {statistics.median(r):>5.3f}x   "
          f"{', '.join(f'{x:.3f}' for x in r)} ({unit}){extra}")
PYEOF
rm -f "$out"
