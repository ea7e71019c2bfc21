"""The workspace's rust-version (its MSRV) must be at least every dependency's own: list the
packages the build resolves for this platform and fail, naming them, where one needs a newer
Rust. (The standard library side is clippy's incompatible_msrv lint, on in Cargo.toml.)
usage: cargo metadata --format-version 1 --locked --filter-platform x86_64-unknown-linux-gnu | python3 scripts/check_msrv.py
"""
import json
import sys


def version(v):
    return tuple(int(x) for x in (v or "0").split("."))[:3] + (0,) * (3 - len((v or "0").split(".")))


meta = json.load(sys.stdin)
ours = {p["name"]: p.get("rust_version") for p in meta["packages"] if p["id"] in meta["workspace_members"]}
msrv = max(version(v) for v in ours.values())
used = {n["id"] for n in meta["resolve"]["nodes"]}
newer = sorted(
    (version(p.get("rust_version")), p["name"], p["version"])
    for p in meta["packages"]
    if p["id"] in used and version(p.get("rust_version")) > msrv
)
if any(v is None for v in ours.values()) or len(set(ours.values())) != 1:
    sys.exit(f"every workspace crate must inherit the workspace's rust-version: {ours}")
if newer:
    sys.exit("rust-version {} is older than these dependencies need: {}".format(
        ".".join(map(str, msrv)), ", ".join(f"{n} {v} (Rust {'.'.join(map(str, r))})" for r, n, v in newer)))
print("rust-version {}: every dependency builds with it".format(".".join(map(str, msrv))))
