#!/usr/bin/env bash
# wndqn's CUDA path measured in one run on any machine with an NVIDIA GPU (a few minutes).
# Needs, on that machine: target/release/wndqn, the agents' unit-test binary as
# target/release/wndqn-unit (`cargo test --release -p wndqn-agents --lib --no-run` builds it),
# the Atari ROMs, and a torch 2.11 whose lib/ libtorch comes from. Run: bash scripts/gpu_check.sh
# Prints every number; the JSON lines also go to $LOG (default /tmp/gpu_check.jsonl).
# A dry run of the plumbing on a CPU machine (short, numbers meaningless, PyTorch's CUDA-graph
# reference errors): DEVICE=cpu SECONDS_EACH=1 E2E_SECONDS=5 E2E_WARMUP=1000 TRAIN_STEPS=3000 \
#   TRAIN_WARMUP=1000 bash scripts/gpu_check.sh
#   1. wndqn info                          (libtorch_cuda linked? GPU name, memory, cuDNN)
#      the CUDA-graph extension's tests (capture, replay on new inputs, a bad capture, copy stream)
#      K graphed updates = K eager updates (every variant, Adam/Adamax/RMSProp)
#   2. learner updates/s on CUDA, batch 32: wndqn eager and graphed, PyTorch eager and CUDA
#      graph, plain and weight_norm; wndqn weight_norm graphed in tf32 and bf16, PyTorch's bf16
#      autocast
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
LOG=${LOG:-/tmp/gpu_check.jsonl}
: > "$LOG"
S=${SECONDS_EACH:-8}
DEV=${DEVICE:-cuda}
E2E=${E2E_SECONDS:-40}
STEPS=${TRAIN_STEPS:-30000}
E2E_WARMUP=${E2E_WARMUP:-20000}
TRAIN_WARMUP=${TRAIN_WARMUP:-5000}
ACTORS=$(( $(nproc) > 3 ? $(nproc) - 2 : 1 ))
section() { printf '\n=== %s (%ds)\n' "$*" "$SECONDS"; }
record() { echo "$1" | tee -a "$LOG"; }

section "1. info"
$W info
record "$($W info --json)"
[ -x target/release/wndqn-unit ] && target/release/wndqn-unit ext:: graphed_updates --nocapture

section "2. learner, CUDA, batch 32, ${S}s each"
for v in plain weight_norm; do
    record "$($W --device $DEV bench learner --variant $v --seconds "$S" --cuda-graph false --json 2>&1 | tail -n1)"
    record "$($W --device $DEV bench learner --variant $v --seconds "$S" --json 2>&1 | tail -n1)"
    record "$("$PY" scripts/bench_learner_reference.py --device $DEV --variant $v --seconds "$S" 2>&1 | tail -n1)"
    record "$("$PY" scripts/bench_learner_reference.py --device $DEV --cuda-graph --variant $v --seconds "$S" 2>&1 | tail -n1)"
done

for p in tf32 bf16; do
    record "$($W --device $DEV bench learner --variant weight_norm --precision $p --seconds "$S" --json 2>&1 | tail -n1)"
done
record "$("$PY" scripts/bench_learner_reference.py --device $DEV --variant weight_norm --precision bf16 --seconds "$S" 2>&1 | tail -n1)"

section "3. bench e2e, Pong, $ACTORS actors"
for v in plain weight_norm; do
    record "$($W --device $DEV bench e2e --game Pong --variant $v --seconds "$E2E" --set actors.num_actors=$ACTORS \
        --set replay.warmup_steps=$E2E_WARMUP --set learner.exclusive_cpu=false --json 2>&1 | tail -n1)"
done

section "4. train on CUDA, eval, resume"
R=$(mktemp -d)
$W --device $DEV train --config configs/pong.toml --quiet --runs-dir "$R" --set run.total_env_steps=$STEPS \
    --set replay.warmup_steps=$TRAIN_WARMUP --set log.checkpoint_every=2000 --set log.eval_every=0 \
    --set actors.num_actors=$ACTORS --set learner.exclusive_cpu=false
RUN=$(ls -d "$R"/*/ | head -n1)
$W eval "$RUN" --episodes 1 --max-steps 2000 --json
$W --device $DEV train --resume "$RUN" --quiet --set run.total_env_steps=$(( STEPS + STEPS / 3 ))
cat "$RUN/summary.json"
section "done"
