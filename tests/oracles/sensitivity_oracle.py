"""A direct computation of the sweep report's tuning statistics (src/sweep/tuning.rs holds its
own to them): per variant and grid point the IQM of the normalized scores pooled over games
(rliable's aggregate IQM, with its stratified bootstrap interval from rliable itself), the same per
game, the best point overall and per game, the choice rule, and the sensitivity score of Adkins,
Bowling & White (2024): mean over games of max over points of the per-game mean score, less the
max over points of the mean over games, with a percentile-bootstrap interval that resamples
every (game, point) cell's runs.

usage: sensitivity_oracle.py CASE.json
CASE.json: {"reps": R, "games": [...], "points": P, "variants": [...],
            "runs": [{"variant": v, "game": g, "point": i, "score": x}, ...]}
Prints JSON: {variant: {"curve": [{"point", "low", "high"}] per point, "per_game": {game: [iqm per point]},
                        "best": i, "best_per_game": {game: i}, "choice": i, "choice_per_game": {game: i},
                        "sensitivity": {"point", "low", "high"}}}
"""
import json
import sys
import warnings

import numpy as np
import scipy.stats
from rliable import library as rly
from rliable import metrics

warnings.simplefilter("ignore", FutureWarning)
case = json.load(open(sys.argv[1]))
reps, games, n_points = case["reps"], case["games"], case["points"]


def cell(variant, game, point):
    return [r["score"] for r in case["runs"] if (r["variant"], r["game"], r["point"]) == (variant, game, point)]


def iqm(values):
    return float(scipy.stats.trim_mean(np.asarray(values), proportiontocut=0.25, axis=None))


def argmax_first(xs):
    return int(np.argmax(np.asarray(xs)))  # the first of equal maxima, as the report


def adkins(cells):
    """cells[g][p]: the runs' scores."""
    g = np.array([[np.mean(c) for c in row] for row in cells])
    return float(np.mean(g.max(axis=1)) - g.mean(axis=0).max())


out = {}
rng = np.random.default_rng(5)
for v in case["variants"]:
    res = {"curve": [], "per_game": {}, "best_per_game": {}, "choice_per_game": {}}
    for p in range(n_points):
        # rliable's layout: runs x tasks (every game has the same number of runs here).
        m = np.array([cell(v, g, p) for g in games]).T
        np.random.seed(1)
        points, cis = rly.get_interval_estimates(
            {"s": m}, lambda s: np.array([metrics.aggregate_iqm(s)]), reps=reps, random_state=np.random.RandomState(1))
        res["curve"].append({"point": float(points["s"][0]), "low": float(cis["s"][0][0]), "high": float(cis["s"][1][0])})
    curve = [c["point"] for c in res["curve"]]
    res["best"] = res["choice"] = argmax_first(curve)
    for g in games:
        per = [iqm(cell(v, g, p)) for p in range(n_points)]
        res["per_game"][g] = per
        res["best_per_game"][g] = res["choice_per_game"][g] = argmax_first(per)
    cells = [[cell(v, g, p) for p in range(n_points)] for g in games]
    boots = []
    for _ in range(reps):
        boots.append(adkins([[rng.choice(c, size=len(c), replace=True) for c in row] for row in cells]))
    res["sensitivity"] = {"point": adkins(cells), "low": float(np.percentile(boots, 2.5)),
                          "high": float(np.percentile(boots, 97.5))}
    out[v] = res
print(json.dumps(out))
