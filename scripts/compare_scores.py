#!/usr/bin/env python3
"""Do two sets of runs learn the same? Final scores of the same game x variant cells, side by side.

Each set is an archived sweep's runs.jsonl (or its folder), optionally narrowed to the runs whose
name contains --a-only / --b-only (a grid point such as `lr2.5e-4`) and to --seeds. A cell is the
game and variant of a run's name (`MinAtar-Breakout__plain__lr2.5e-4__s1`: MinAtar-Breakout,
plain). For each cell present in both sets it prints each set's mean final score with a 95%
percentile-bootstrap interval, and the difference B - A with Welch's 95% t interval (a
bootstrap of three seeds is too narrow to judge by). "same" means that interval holds 0.

    .venv/bin/python scripts/compare_scores.py \
        docs/results/minatar-normalizers/sweep docs/results/minatar-lr/sweep \
        --b-only lr2.5e-4 --seeds 1-3 --games Breakout,Seaquest --variants plain,weight_norm
"""
import argparse
import json
import pathlib
import sys

import numpy as np
from scipy import stats


def load(path, only, seeds):
    p = pathlib.Path(path)
    if p.is_dir():
        p = p / "runs.jsonl"
    cells = {}
    for line in p.read_text().splitlines():
        r = json.loads(line)
        parts = r["name"].split("__")
        seed = int(parts[-1].lstrip("s"))
        if only and only not in r["name"]:
            continue
        if seeds and seed not in seeds:
            continue
        cells.setdefault((parts[0], parts[1]), []).append(r["score"])
    return cells


def seed_list(text):
    if not text:
        return None
    out = set()
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        out.update(range(int(lo), int(hi or lo) + 1))
    return out


def interval(rng, xs, reps):
    xs = np.asarray(xs)
    means = rng.choice(xs, size=(reps, len(xs))).mean(axis=1)
    return xs.mean(), np.percentile(means, 2.5), np.percentile(means, 97.5)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--a-only", default="")
    ap.add_argument("--b-only", default="")
    ap.add_argument("--seeds", default="", help="e.g. 1-3 or 1,2,5")
    ap.add_argument("--games", default="", help="comma-separated parts of game names")
    ap.add_argument("--variants", default="", help="comma-separated variants")
    ap.add_argument("--reps", type=int, default=20000)
    args = ap.parse_args()
    seeds = seed_list(args.seeds)
    a, b = load(args.a, args.a_only, seeds), load(args.b, args.b_only, seeds)
    games = [g for g in args.games.split(",") if g]
    variants = [v for v in args.variants.split(",") if v]
    keys = sorted(k for k in a.keys() & b.keys()
                  if (not games or any(g in k[0] for g in games)) and (not variants or k[1] in variants))
    if not keys:
        sys.exit("no game x variant cell is in both sets (check --a-only, --b-only, --seeds, --games)")
    rng = np.random.default_rng(0)
    print("| game | variant | A: n, mean [95% CI] | B: n, mean [95% CI] | B - A [95% CI] | same |")
    print("|---|---|---|---|---|---|")
    same = judged = 0
    for k in keys:
        xa, xb = np.asarray(a[k]), np.asarray(b[k])
        ma, la, ha = interval(rng, xa, args.reps)
        mb, lb, hb = interval(rng, xb, args.reps)
        head = (f"| {k[0]} | {k[1]} | {len(xa)}, {ma:.2f} [{la:.2f}, {ha:.2f}] "
                f"| {len(xb)}, {mb:.2f} [{lb:.2f}, {hb:.2f}] ")
        if len(xa) < 2 or len(xb) < 2:
            print(head + f"| {mb - ma:+.2f} | n/a (one seed) |")
            continue
        va, vb = xa.var(ddof=1) / len(xa), xb.var(ddof=1) / len(xb)
        se = np.sqrt(va + vb)
        df = (va + vb) ** 2 / (va**2 / (len(xa) - 1) + vb**2 / (len(xb) - 1)) if se > 0 else 1.0
        half = stats.t.ppf(0.975, df) * se
        dl, dh = mb - ma - half, mb - ma + half
        ok = dl <= 0 <= dh
        judged += 1
        same += ok
        print(head + f"| {mb - ma:+.2f} [{dl:+.2f}, {dh:+.2f}] | {'yes' if ok else 'no'} |")
    print(f"\n{same} of {judged} cells with two seeds or more: the difference's interval holds 0")


if __name__ == "__main__":
    main()
