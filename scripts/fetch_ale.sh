#!/usr/bin/env bash
# Fetch the source of ALE 0.12.1 (the C++ emulator inside ale-py 0.12.1) into .ale/, checking
# its hash. envs/build.rs compiles it into the binary. Idempotent: nothing to do once the
# checked source is there. Called by scripts/setup.sh.
#
# Why fetched and not vendored: ALE is GPL-2.0 and 4 MB of C++; the project keeps its own code
# MIT and takes ALE byte-for-byte from the same release that ale-py 0.12.1 (our parity oracle)
# is built from. The sha256 pins that exact archive.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=0.12.1
SHA256=c503d574c5983e1063b451201ccb779d935919c0f6bf116fb0f4f8aa4c86d249
DEST=.ale
SRC="$DEST/ale_py-$VERSION"
[ -f "$SRC/.wndqn-ok" ] && exit 0

log() { printf '\033[1;34m[setup]\033[0m %s\n' "$*" >&2; }
mkdir -p "$DEST"
TAR="$DEST/ale_py-$VERSION.tar.gz"
if [ ! -f "$TAR" ] || [ "$(sha256sum "$TAR" | cut -c1-64)" != "$SHA256" ]; then
    log "downloading the ALE $VERSION source (ale-py sdist, 11.5 MB) from PyPI"
    PY=${PYTHON:-python3}
    [ -x .venv/bin/python ] && PY=.venv/bin/python
    rm -f "$TAR"
    "$PY" -m pip download -q --no-deps --no-binary ale-py "ale-py==$VERSION" -d "$DEST" >&2
fi
got=$(sha256sum "$TAR" | cut -c1-64)
if [ "$got" != "$SHA256" ]; then
    echo "error: $TAR has sha256 $got, expected $SHA256; remove it and run again" >&2
    exit 1
fi
rm -rf "$SRC"
tar -xzf "$TAR" -C "$DEST"
touch "$SRC/.wndqn-ok"
log "ALE $VERSION source in $SRC"
