#!/usr/bin/env bash
# MinAtar throughput, side by side, runs interleaved REPEATS times, medians and ratios:
#   1. env steps/s per core, each game: `wndqn bench env --threads 1` against the minatar
#      package (scripts/bench_minatar_reference.py env), random actions, observation every step;
#   2. learner updates/s on one thread: `wndqn bench learner --network minatar` (configs/minatar.toml's
#      update: centered RMSProp with momentum, no double DQN, no clipping) against the same update
#      in PyTorch eager (scripts/bench_learner_reference.py --network minatar --optimizer rmsprop
#      --double 0 --clip 0), plain and weight_norm;
#   3. end to end on Breakout, configs/minatar.toml (one update per frame): `wndqn bench e2e`
#      against a DQN loop of CleanRL's design on the package (bench_minatar_reference.py e2e).
#   usage: scripts/bench_minatar.sh [REPEATS=3] [SECONDS=8] [PARTS="env learner e2e"]
set -euo pipefail
cd "$(dirname "$0")/.."
R=${1:-3}; S=${2:-8}; P=" ${3:-env learner e2e} "
W=target/release/wndqn
PY=.venv/bin/python
out=$(mktemp)
grep -m1 'model name' /proc/cpuinfo | sed 's/.*: /cpu: /' >&2
for i in $(seq "$R"); do
    [[ $P == *" env "* ]] && for g in Asterix:asterix Breakout:breakout Freeway:freeway Seaquest:seaquest SpaceInvaders:space_invaders; do
        id=${g%%:*}; name=${g##*:}
        echo "ours env $name $($W bench env --game "MinAtar/$id-v0" --threads 1 --seconds "$S" --json)" >> "$out"
        echo "ref env $name $($PY scripts/bench_minatar_reference.py env --game "$name" --seconds "$S")" >> "$out"
    done
    [[ $P == *" learner "* ]] && for v in plain weight_norm; do
        echo "ours learner $v $($W bench learner --device cpu --network minatar --variant "$v" --threads 1 --seconds "$S" --json)" >> "$out"
        echo "ref learner $v $($PY scripts/bench_learner_reference.py --network minatar --optimizer rmsprop --double 0 --clip 0 --variant "$v" --threads 1 --seconds "$S")" >> "$out"
    done
    [[ $P != *" e2e "* ]] && continue
    echo "ours e2e breakout $($W --device cpu bench e2e --game MinAtar/Breakout-v0 --variant plain --seconds $((2 * S)) --json 2>/dev/null | tail -n1)" >> "$out"
    echo "ref e2e breakout $($PY scripts/bench_minatar_reference.py e2e --game breakout --seconds $((2 * S)))" >> "$out"
done
$PY - "$out" <<'PYEOF'
import json, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    who, what, key, js = line.split(" ", 3)
    d = json.loads(js)
    v = d["updates_per_sec"] if what == "learner" else d["env_steps_per_sec"]
    rows.setdefault((what, key), {}).setdefault(who, []).append(v)
unit = {"env": "env steps/s", "learner": "updates/s", "e2e": "env steps/s"}
print(f"{'what':<8} {'case':<16} {'wndqn':>10} {'reference':>10} {'ratio':>7}   (medians; per-round ratios)")
for (what, key), d in rows.items():
    o, r = d["ours"], d["ref"]
    ratios = [a / b for a, b in zip(o, r)]
    print(f"{what:<8} {key:<16} {statistics.median(o):>10.0f} {statistics.median(r):>10.0f} {statistics.median(ratios):>6.2f}x"
          f"   {unit[what]}; {', '.join(f'{x:.2f}' for x in ratios)}")
PYEOF
rm -f "$out"
