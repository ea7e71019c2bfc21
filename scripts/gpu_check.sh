#!/usr/bin/env bash
# The GPU measurements of issue 11, as one prepared run (under 6 minutes on an H100/H200 machine).
# Built here, run there: the machine has torch 2.11 in its python3 but no cargo, so carry
# target/release/wndqn, the unit-test binary and the ROMs. Here, first:
#   cargo test --release -p wndqn --bin wndqn --no-run --message-format=json \
#     | python3 -c 'import json,sys; [print(m["executable"]) for m in map(json.loads, sys.stdin) if m.get("executable")]' \
#     | xargs -I{} cp {} target/release/wndqn-unit
# then, with the device tool:
#   run(command="bash scripts/gpu_check.sh", carry=["target/release/wndqn", "target/release/wndqn-unit",
#       ".venv/lib/python3.11/site-packages/ale_py/roms"])
# Prints every number; the JSON lines also go to $OUT/gpu_check.jsonl when $OUT is set.
#   1. wndqn info                          (libtorch_cuda linked? GPU name, memory, cuDNN)
#      the CUDA-graph shim's own test      (capture, replay on new inputs, a bad capture)
#      K graphed updates = K eager updates (every variant, Adam/Adamax/RMSProp)
#   2. learner updates/s on CUDA, batch 32: wndqn eager and graphed, PyTorch eager and CUDA
#      graph, plain and weight_norm
#   3. bench e2e on Pong with (cores - 2) actors
#   4. a short train on CUDA, eval of its checkpoint, --resume
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] && PY=.venv/bin/python
TORCH_LIB=$("$PY" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
export LD_LIBRARY_PATH="$TORCH_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
ROMS=$(ls -d .venv/lib/python3*/site-packages/ale_py/roms 2>/dev/null | head -n1)
[ -n "$ROMS" ] && export WNDQN_ROM_DIR="$PWD/$ROMS"
W=target/release/wndqn
LOG=${OUT:-/tmp}/gpu_check.jsonl
: > "$LOG"
S=${SECONDS_EACH:-8}
section() { printf '\n=== %s (%ds)\n' "$*" "$SECONDS"; }
record() { echo "$1" | tee -a "$LOG"; }

section "1. info"
$W info
record "$($W info --json)"
[ -x target/release/wndqn-unit ] && target/release/wndqn-unit cuda_graph graphed --nocapture

section "2. learner, CUDA, batch 32, ${S}s each"
for v in plain weight_norm; do
    record "$($W --device cuda bench learner --variant $v --seconds "$S" --cuda-graph false --json 2>&1 | tail -n1)"
    record "$($W --device cuda bench learner --variant $v --seconds "$S" --json 2>&1 | tail -n1)"
    record "$("$PY" scripts/bench_learner_reference.py --device cuda --variant $v --seconds "$S" 2>&1 | tail -n1)"
    record "$("$PY" scripts/bench_learner_reference.py --device cuda --cuda-graph --variant $v --seconds "$S" 2>&1 | tail -n1)"
done

section "3. bench e2e, Pong, $(( $(nproc) - 2 )) actors"
for v in plain weight_norm; do
    record "$($W --device cuda bench e2e --game Pong --variant $v --seconds 40 --set actors.num_actors=$(( $(nproc) - 2 )) \
        --set replay.warmup_steps=20000 --set learner.exclusive_cpu=false --json 2>&1 | tail -n1)"
done

section "4. train on CUDA, eval, resume"
R=$(mktemp -d)
$W --device cuda train --config configs/pong.toml --quiet --runs-dir "$R" --set run.total_env_steps=30000 \
    --set replay.warmup_steps=5000 --set log.checkpoint_every=2000 --set log.eval_every=0 \
    --set actors.num_actors=$(( $(nproc) - 2 )) --set learner.exclusive_cpu=false
RUN=$(ls -d "$R"/*/ | head -n1)
$W eval "$RUN" --episodes 1 --max-steps 2000 --json
$W --device cuda train --resume "$RUN" --quiet --set run.total_env_steps=40000
cat "$RUN/summary.json"
section "done"
