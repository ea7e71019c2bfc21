"""rliable 1.2.0's answers for the sweep report's statistics (src/stats.rs holds its own to them).

usage: rliable_oracle.py CASES.json
CASES.json: {"reps": R, "taus": [...], "cases": [{"x": [[run][task]], "y": [[run][task]], "profile": bool}],
             "ragged": [{"x": [[task][run]], "y": [[task][run]]}]}
Prints JSON: for each case, per score set, point estimates and 95% percentile intervals of
rliable's aggregate IQM, median, mean and optimality gap, the probability of improvement of x over
y with its interval (StratifiedIndependentBootstrap), and the score-distribution profile at taus;
for each ragged case (tasks with different numbers of runs, which rliable's matrices cannot hold)
the point estimates from scipy's primitives on per-task lists.
"""
import json
import sys
import warnings

import numpy as np
import scipy.stats
from rliable import library as rly
from rliable import metrics

warnings.simplefilter("ignore", FutureWarning)  # arch's note on random_state
spec = json.load(open(sys.argv[1]))
reps = spec["reps"]
taus = np.array(spec["taus"])
aggregate = {
    "iqm": metrics.aggregate_iqm,
    "median": metrics.aggregate_median,
    "mean": metrics.aggregate_mean,
    "optimality_gap": metrics.aggregate_optimality_gap,
}


def seeded(seed):
    """rliable 1.2.0's stratified bootstraps draw their indices from numpy's global generator
    (`np.random.choice` in `update_indices`), not from the `random_state` they are given: seed
    that too, so that the oracle's intervals are the same on every run."""
    np.random.seed(seed)
    return np.random.RandomState(seed)


def interval(point, ci):
    return {"point": float(np.asarray(point).reshape(-1)[0]), "low": float(ci[0][0]), "high": float(ci[1][0])}


out = {"cases": [], "ragged": []}
for case in spec["cases"]:
    sets = {k: np.array(case[k]) for k in ("x", "y")}
    res = {}
    for k, scores in sets.items():
        res[k] = {}
        for name, fn in aggregate.items():
            points, cis = rly.get_interval_estimates(
                {"s": scores}, lambda s, fn=fn: np.array([fn(s)]), reps=reps, random_state=seeded(1))
            res[k][name] = interval(points["s"], cis["s"])
        if case.get("profile"):
            seeded(3)
            profile, profile_ci = rly.create_performance_profile({"s": scores}, taus, reps=reps)
            res[k]["profile"] = {"point": profile["s"].tolist(), "low": profile_ci["s"][0].tolist(),
                                 "high": profile_ci["s"][1].tolist()}
    points, cis = rly.get_interval_estimates(
        {"xy": [sets["x"], sets["y"]]},
        lambda x, y: np.array([metrics.probability_of_improvement(x, y)]),
        reps=reps, random_state=seeded(2))
    res["poi"] = interval(points["xy"], cis["xy"])
    out["cases"].append(res)

for case in spec["ragged"]:
    x, y = case["x"], case["y"]
    pooled = np.concatenate([np.array(t) for t in x])
    means = np.array([np.mean(t) for t in x])
    poi = np.mean([scipy.stats.mannwhitneyu(a, b, alternative="greater").statistic / (len(a) * len(b))
                   for a, b in zip(x, y)])
    out["ragged"].append({
        "iqm": float(scipy.stats.trim_mean(pooled, proportiontocut=0.25, axis=None)),
        "median": float(np.median(means)),
        "mean": float(np.mean(means)),
        "optimality_gap": float(1 - np.mean(np.minimum(pooled, 1))),
        "poi": float(poi),
    })
print(json.dumps(out))
