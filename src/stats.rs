//! Aggregate statistics over tasks (games), as rliable 1.2.0 computes them (Agarwal et al. 2021,
//! "Deep Reinforcement Learning at the Edge of the Statistical Precipice"), with stratified
//! bootstrap confidence intervals. The tests hold these against rliable itself
//! (`tests/oracles/rliable_oracle.py`).
//!
//! Scores are given per task, each task with the scores of its runs: `scores[task][run]`. rliable
//! takes a `runs x tasks` matrix; here tasks may have different numbers of runs (a sweep with a
//! failed run), and every definition reduces to rliable's on a full matrix:
//! - IQM: the mean of the middle 50% of all scores pooled (`scipy.stats.trim_mean(x, 0.25)`);
//! - median / mean: of the per-task mean scores;
//! - optimality gap: `gamma - mean(min(score, gamma))` over all scores (gamma = 1);
//! - probability of improvement of X over Y: per task the Mann-Whitney U of X > Y (ties count
//!   one half) divided by `n * m`, then the mean over tasks;
//! - score distribution (performance profile): the fraction of all scores above `tau`.
//!
//! Intervals: percentile bootstrap (numpy's linear interpolation), each task's runs resampled
//! with replacement (stratified), `reps` times; for a pair of score sets each set is resampled
//! on its own (rliable's `StratifiedIndependentBootstrap`).

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// `scores[task][run]`.
pub type Scores = Vec<Vec<f64>>;

/// A point estimate with its confidence interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interval {
    /// The statistic on the data itself.
    pub point: f64,
    /// Lower bound of the interval.
    pub low: f64,
    /// Upper bound of the interval.
    pub high: f64,
}

fn pooled(s: &Scores) -> Vec<f64> {
    s.iter().flatten().copied().collect()
}

/// The mean of the values (NaN when there are none).
pub fn avg(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

/// `scipy.stats.trim_mean(v, cut)`: the mean after cutting `floor(cut * n)` values from each end.
pub fn trim_mean(v: &[f64], cut: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let k = (cut * s.len() as f64) as usize;
    avg(&s[k..s.len() - k])
}

/// 95% percentile-bootstrap interval (10,000 resamples) of the mean of one set of values.
pub fn mean_interval(v: &[f64], seed: u64) -> (f64, f64) {
    let i = Bootstrap { reps: 10_000, seed, size: 0.95 }.interval(&vec![v.to_vec()], mean);
    (i.low, i.high)
}

fn task_means(s: &Scores) -> Vec<f64> {
    s.iter().map(|t| avg(t)).collect()
}

/// An aggregate of scores over tasks.
pub type Metric = fn(&Scores) -> f64;

/// The aggregates a report gives, by name.
pub const AGGREGATES: [(&str, Metric); 4] =
    [("IQM", iqm), ("median", median), ("mean", mean), ("optimality gap", optimality_gap)];

/// Interquartile mean of all scores pooled.
pub fn iqm(s: &Scores) -> f64 {
    trim_mean(&pooled(s), 0.25)
}

/// Median over tasks of the per-task mean scores.
pub fn median(s: &Scores) -> f64 {
    let mut m = task_means(s);
    m.sort_by(|a, b| a.total_cmp(b));
    let n = m.len();
    if n % 2 == 1 {
        m[n / 2]
    } else {
        (m[n / 2 - 1] + m[n / 2]) / 2.0
    }
}

/// Mean over tasks of the per-task mean scores.
pub fn mean(s: &Scores) -> f64 {
    avg(&task_means(s))
}

/// `1 - mean(min(score, 1))` over all scores: how far runs fall short of the human level.
pub fn optimality_gap(s: &Scores) -> f64 {
    let p = pooled(s);
    1.0 - avg(&p.iter().map(|x| x.min(1.0)).collect::<Vec<_>>())
}

/// P(X > Y): per task the Mann-Whitney U statistic of X over Y (ties count one half) divided by
/// `n * m`, then the mean over tasks. `x` and `y` list the same tasks.
pub fn probability_of_improvement(x: &Scores, y: &Scores) -> f64 {
    let per_task: Vec<f64> = x
        .iter()
        .zip(y)
        .map(|(xs, ys)| {
            let u: f64 = xs
                .iter()
                .map(|a| {
                    ys.iter()
                        .map(|b| {
                            if a > b {
                                1.0
                            } else if a == b {
                                0.5
                            } else {
                                0.0
                            }
                        })
                        .sum::<f64>()
                })
                .sum();
            u / (xs.len() * ys.len()) as f64
        })
        .collect();
    avg(&per_task)
}

/// The fraction of all scores above `tau` (a point of a performance profile).
pub fn fraction_above(s: &Scores, tau: f64) -> f64 {
    let p = pooled(s);
    p.iter().filter(|&&x| x > tau).count() as f64 / p.len() as f64
}

/// The `q`-th percentile (0..=100) of sorted values, with numpy's linear interpolation.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    let pos = q / 100.0 * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// Each task's runs resampled with replacement.
fn resample(s: &Scores, rng: &mut StdRng) -> Scores {
    s.iter().map(|t| (0..t.len()).map(|_| t[rng.gen_range(0..t.len())]).collect()).collect()
}

/// The bootstrap settings of every interval of a report.
#[derive(Debug, Clone, Copy)]
pub struct Bootstrap {
    /// Resamples.
    pub reps: usize,
    /// Seed of the resampling.
    pub seed: u64,
    /// Coverage (0.95).
    pub size: f64,
}

impl Bootstrap {
    fn bounds(&self, mut values: Vec<f64>) -> (f64, f64) {
        values.sort_by(|a, b| a.total_cmp(b));
        let tail = 100.0 * (1.0 - self.size) / 2.0;
        (percentile(&values, tail), percentile(&values, 100.0 - tail))
    }

    /// The statistic `f` of `s` with its stratified bootstrap interval.
    pub fn interval(&self, s: &Scores, f: impl Fn(&Scores) -> f64) -> Interval {
        let mut rng = StdRng::seed_from_u64(self.seed);
        let values = (0..self.reps).map(|_| f(&resample(s, &mut rng))).collect();
        let (low, high) = self.bounds(values);
        Interval { point: f(s), low, high }
    }

    /// The statistic `f` of two score sets, each resampled on its own.
    pub fn interval_pair(&self, x: &Scores, y: &Scores, f: impl Fn(&Scores, &Scores) -> f64) -> Interval {
        let mut rng = StdRng::seed_from_u64(self.seed);
        let values = (0..self.reps).map(|_| f(&resample(x, &mut rng), &resample(y, &mut rng))).collect();
        let (low, high) = self.bounds(values);
        Interval { point: f(x, y), low, high }
    }

    /// A vector-valued statistic (a profile, a curve) with an interval for each entry.
    pub fn intervals(&self, s: &Scores, f: impl Fn(&Scores) -> Vec<f64>) -> Vec<Interval> {
        let mut rng = StdRng::seed_from_u64(self.seed);
        let point = f(s);
        let mut columns = vec![Vec::with_capacity(self.reps); point.len()];
        for _ in 0..self.reps {
            for (c, v) in columns.iter_mut().zip(f(&resample(s, &mut rng))) {
                c.push(v);
            }
        }
        point
            .into_iter()
            .zip(columns)
            .map(|(point, c)| {
                let (low, high) = self.bounds(c);
                Interval { point, low, high }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn definitions_on_small_cases() {
        // scipy.stats.trim_mean([1..=8], 0.25) cuts 2 from each end: mean(3, 4, 5, 6) = 4.5.
        assert_eq!(trim_mean(&[8.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0], 0.25), 4.5);
        // 5 values: int(1.25) = 1 cut each end.
        assert_eq!(trim_mean(&[1.0, 2.0, 3.0, 4.0, 100.0], 0.25), 3.0);
        let s: Scores = vec![vec![0.0, 1.0], vec![2.0, 4.0, 6.0], vec![1.5]];
        assert_eq!(mean(&s), (0.5 + 4.0 + 1.5) / 3.0);
        assert_eq!(median(&s), 1.5);
        // Clipped at 1: 0, 1, 1, 1, 1, 1 -> 1 - 5/6.
        assert!((optimality_gap(&s) - 1.0 / 6.0).abs() < 1e-12);
        assert_eq!(fraction_above(&s, 1.0), 4.0 / 6.0);
        // Ties count one half: [1, 2] vs [2, 0]: (1>2:0, 1>0:1, 2=2:0.5, 2>0:1) / 4.
        assert_eq!(probability_of_improvement(&vec![vec![1.0, 2.0]], &vec![vec![2.0, 0.0]]), 2.5 / 4.0);
        assert_eq!(probability_of_improvement(&s, &s), 0.5);
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0], 50.0), 2.5);
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0], 2.5), 1.075);
    }

    /// A `runs x tasks` matrix (rliable's layout) as `scores[task][run]`.
    fn by_task(m: &[Vec<f64>]) -> Scores {
        (0..m[0].len()).map(|t| m.iter().map(|r| r[t]).collect()).collect()
    }

    /// Scores with ties (rounded to a tenth) around 1, where the optimality gap clips.
    fn matrix(runs: usize, tasks: usize, seed: u64, shift: f64) -> Vec<Vec<f64>> {
        let mut rng = StdRng::seed_from_u64(seed);
        (0..runs)
            .map(|_| {
                (0..tasks)
                    .map(|t| ((rng.gen_range(-1.0..1.5) + shift + 0.2 * t as f64) * 10.0).round() / 10.0)
                    .collect()
            })
            .collect()
    }

    /// The same score sets through rliable 1.2.0 (the project venv, `make setup`): point
    /// estimates to 1e-9, interval bounds within Monte-Carlo error (the two bootstraps draw
    /// different resamples: a tenth of the interval's width, 4,000 resamples each, about seven
    /// standard errors of the difference; rliable's bootstrap takes half a millisecond a
    /// resample, which bounds the count), for
    /// matrices with unequal numbers of runs between the two sets, and ragged sets (tasks with
    /// different numbers of runs) against scipy's primitives.
    #[test]
    fn statistics_and_intervals_match_rliable() {
        let reps = 4_000;
        let taus: Vec<f64> = (0..=8).map(|k| -0.5 + 0.35 * k as f64).collect();
        let cases = [(matrix(5, 4, 1, 0.0), matrix(3, 4, 2, 0.3)), (matrix(10, 3, 3, 0.5), matrix(10, 3, 4, 0.0))];
        let ragged = [(
            vec![vec![0.1, 0.5, 0.5], vec![1.2, 0.9], vec![2.0, 0.2, 0.2, 0.7]],
            vec![vec![0.5, 0.3], vec![0.9, 0.9, 1.5], vec![0.2]],
        )];
        let spec = serde_json::json!({
            "reps": reps,
            "taus": taus,
            "cases": cases.iter().enumerate().map(|(k, (x, y))| serde_json::json!({"x": x, "y": y, "profile": k == 0})).collect::<Vec<_>>(),
            "ragged": ragged.iter().map(|(x, y)| serde_json::json!({"x": x, "y": y})).collect::<Vec<_>>(),
        });
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cases.json");
        std::fs::write(&path, spec.to_string()).unwrap();
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let o = std::process::Command::new(root.join(".venv/bin/python"))
            .arg(root.join("tests/oracles/rliable_oracle.py"))
            .arg(&path)
            .output()
            .expect("the project venv (make setup) has rliable");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let theirs: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let b = Bootstrap { reps, seed: 11, size: 0.95 };
        // `grain`: the step between the values a statistic can take (a fraction of N scores
        // moves in steps of 1/N), so two bootstraps' percentiles may land one step apart.
        let close_in = |what: &str, ours: Interval, t: &serde_json::Value, grain: f64| {
            let (p, l, h) = (t["point"].as_f64().unwrap(), t["low"].as_f64().unwrap(), t["high"].as_f64().unwrap());
            assert!((ours.point - p).abs() < 1e-9, "{what}: point {} vs rliable {p}", ours.point);
            let tol = (0.1 * (h - l)).max(grain) + 1e-9;
            assert!(
                (ours.low - l).abs() <= tol && (ours.high - h).abs() <= tol,
                "{what}: [{}, {}] vs rliable [{l}, {h}]",
                ours.low,
                ours.high
            );
        };
        let close = |what: &str, ours: Interval, t: &serde_json::Value| close_in(what, ours, t, 0.0);
        // rliable's names of the same four.
        let metrics: Vec<(&str, Metric)> =
            ["iqm", "median", "mean", "optimality_gap"].into_iter().zip(AGGREGATES.map(|a| a.1)).collect();
        for (k, (x, y)) in cases.iter().enumerate() {
            let t = &theirs["cases"][k];
            for (name, m) in [("x", x), ("y", y)] {
                let s = by_task(m);
                for &(metric, f) in &metrics {
                    close(&format!("case {k} {name} {metric}"), b.interval(&s, f), &t[name][metric]);
                }
                if k > 0 {
                    continue;
                }
                let prof = b.intervals(&s, |s| taus.iter().map(|&tau| fraction_above(s, tau)).collect());
                for (j, i) in prof.into_iter().enumerate() {
                    let tp = &t[name]["profile"];
                    let one = serde_json::json!({"point": tp["point"][j], "low": tp["low"][j], "high": tp["high"][j]});
                    let grain = 1.0 / s.iter().map(Vec::len).sum::<usize>() as f64;
                    close_in(&format!("case {k} {name} profile at {}", taus[j]), i, &one, grain);
                }
            }
            close(
                &format!("case {k} P(x > y)"),
                b.interval_pair(&by_task(x), &by_task(y), probability_of_improvement),
                &t["poi"],
            );
        }
        for (k, (x, y)) in ragged.iter().enumerate() {
            let t = &theirs["ragged"][k];
            for &(metric, f) in &metrics {
                assert!(
                    (f(x) - t[metric].as_f64().unwrap()).abs() < 1e-9,
                    "ragged {metric}: {} vs {}",
                    f(x),
                    t[metric]
                );
            }
            assert!((probability_of_improvement(x, y) - t["poi"].as_f64().unwrap()).abs() < 1e-9);
        }
    }

    #[test]
    fn bootstrap_intervals_stay_within_the_data_and_cover_the_point() {
        let s: Scores = vec![vec![0.1, 0.4, 0.3], vec![0.9, 1.2, 1.0, 0.8], vec![2.0, 2.5]];
        let b = Bootstrap { reps: 2000, seed: 3, size: 0.95 };
        for f in [iqm, median, mean, optimality_gap] {
            let i = b.interval(&s, f);
            assert!(i.low <= i.point && i.point <= i.high, "{i:?}");
        }
        let i = b.interval(&s, iqm);
        assert!(i.low >= 0.1 && i.high <= 2.5, "{i:?}");
        // A set of identical runs has no spread.
        let flat: Scores = vec![vec![1.0; 4]; 3];
        assert_eq!(b.interval(&flat, mean), Interval { point: 1.0, low: 1.0, high: 1.0 });
        let p = b.interval_pair(&s, &flat, probability_of_improvement);
        assert!(p.low <= p.point && p.point <= p.high && p.high <= 1.0 && p.low >= 0.0, "{p:?}");
    }
}
