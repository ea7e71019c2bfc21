#!/usr/bin/env bash
# Resident memory of a long training run, sampled every minute: it must be flat once the replay
# memory is full (no leak in the actors, the learner, the event file or the checkpoints).
#   usage: scripts/memory_soak.sh [MINUTES=60] [CONFIG=configs/pong.toml] [--set k=v ...]
# Default overrides keep the replay memory small (50k transitions, full after ~50k env steps) so
# that most of the hour is spent with a full memory. Prints `minute env_steps replay_size
# rss_mib` rows.
set -euo pipefail
cd "$(dirname "$0")/.."
MIN=${1:-60}; CONFIG=${2:-configs/pong.toml}
shift $(( $# < 2 ? $# : 2 ))
runs=$(mktemp -d)
target/release/wndqn train --config "$CONFIG" --quiet --runs-dir "$runs" --set replay.capacity=50000 \
    --set replay.warmup_steps=20000 --set log.checkpoint_every=5000 "$@" > "$runs/log.txt" 2>&1 &
pid=$!
echo "minute env_steps replay_size rss_mib"
for m in $(seq 0 "$MIN"); do
    [ "$m" -gt 0 ] && sleep 60
    kill -0 "$pid" 2>/dev/null || { echo "the run ended early:"; cat "$runs/log.txt"; exit 1; }
    rss=$(awk '/VmRSS/ {print int($2/1024)}' "/proc/$pid/status")
    steps=$(.venv/bin/python tests/oracles/read_events.py "$runs"/*/ 2>/dev/null | python3 -c 'import json,sys; d=json.load(sys.stdin); s=d["scalars"].get("replay/size",[]); print(f"{int(s[-1][0])} {int(s[-1][1])}" if s else "0 0")' 2>/dev/null || echo "? ?")
    echo "$m $steps $rss"
done
kill -INT "$pid"; wait "$pid" || true
rm -rf "$runs"
