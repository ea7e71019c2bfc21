#!/usr/bin/env bash
# One-time (and idempotent) set-up for wndqn. Called by `make train` and `make test`.
#   1. apt, when missing: a C++ compiler and zlib's headers (envs/build.rs compiles ALE 0.12.1),
#      the DejaVu font for plot labels.
#   2. the project venv .venv with scripts/requirements.txt (libtorch, ROMs, tensorboard),
#      reinstalled only when the requirements or the Python version change (stamp file).
#   3. `.venv/libtorch` -> the wheel's torch/ folder, which .cargo/config.toml points LIBTORCH at.
#   4. the ALE 0.12.1 source, hash-checked, into .ale/ (scripts/fetch_ale.sh).
#   5. cargo-machete for `make lint`, when missing.
#   6. `cargo build --release` (incremental: seconds when nothing changed).
set -euo pipefail
cd "$(dirname "$0")/.."
log() { printf '\033[1;34m[setup]\033[0m %s\n' "$*" >&2; }

FONT=/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf   # labels of `wndqn compare` plots
if ! command -v c++ >/dev/null 2>&1 || [ ! -f /usr/include/zlib.h ] || [ ! -f "$FONT" ]; then
    log "installing g++, zlib1g-dev and fonts-dejavu-core (apt)"
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq g++ zlib1g-dev fonts-dejavu-core >/dev/null
fi

PY=${PYTHON:-python3}
want="$(sha256sum scripts/requirements.txt | cut -c1-64) $($PY -c 'import sys; print(sys.version.split()[0])')"
if [ ! -x .venv/bin/python ] || [ "$(cat .venv/.wndqn-stamp 2>/dev/null)" != "$want" ]; then
    log "creating .venv and installing torch, ale-py, tensorboard (about 5 GB the first time)"
    $PY -m venv .venv
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -r scripts/requirements.txt
    echo "$want" > .venv/.wndqn-stamp
fi
torch_dir=$(cd .venv && ls -d lib/python3*/site-packages/torch | head -n1)
[ -e .venv/libtorch ] || ln -sfn "$torch_dir" .venv/libtorch

bash scripts/fetch_ale.sh

# `make lint` lists unused dependencies with cargo-machete (from crates.io, built once).
if ! command -v cargo-machete >/dev/null 2>&1; then
    log "installing cargo-machete (cargo install, about a minute, once)"
    cargo install --quiet --locked cargo-machete@0.9.2
fi

if [ "${WNDQN_SKIP_BUILD:-0}" != "1" ]; then
    log "cargo build --release"
    cargo build --release --workspace --quiet
fi
