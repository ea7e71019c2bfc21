//! A finished run of a sweep, reduced to what judging it needs: the **record** every part of
//! `sweep report`, the tuning stage's choice and `sweep archive` read, whether the run is a
//! folder of the sweep or a line of an archive's `runs.jsonl`.
//!
//! A record keeps, exactly: the run's final score and its last greedy evaluation (so scores and
//! aggregates are the same from a folder or an archive), its env steps, every greedy evaluation;
//! and, binned along training: the training returns in [`RETURN_BINS`] equal bins of env steps
//! (games and mean return per bin: the sample-efficiency curves are computed from them), and each
//! scalar tag kept in [`crate::results::BINS`] bins (each bin's mean, empty bins carrying the
//! previous one forward, as `--tag` curves bin them). Binned values keep 4 significant digits.
//!
//! An archive's `runs.jsonl` holds one record a line, sorted by run name: a few kilobytes a
//! MinAtar run where its event file took 290 KB.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{anyhow, Context, Result};
use serde::{Deserialize, Serialize};

use crate::results::{self, RunResult, BINS};

/// Bins of the training returns along a run.
pub const RETURN_BINS: usize = 100;

/// The file of an archive's records.
pub const FILE: &str = "runs.jsonl";

/// One run, reduced (see the module doc).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RunRecord {
    /// The run's name in its sweep.
    pub name: String,
    /// Env steps it was trained for.
    pub env_steps: u64,
    /// Its final score (mean return of the games in the last 10% of its env steps).
    pub score: Option<f64>,
    /// Its last greedy evaluation.
    pub eval: Option<f64>,
    /// Mean of its last 20 training games.
    pub last20: Option<f64>,
    /// Learner updates per second (its last segment).
    pub updates_per_sec: f64,
    /// Training time over every segment.
    pub wall_secs: f64,
    /// Games ended in each of [`RETURN_BINS`] equal bins of `[0, env_steps]`.
    pub games: Vec<u32>,
    /// Their mean return per bin (0 where no game ended).
    pub returns: Vec<f64>,
    /// `(env step, mean return)` of each greedy evaluation.
    pub evals: Vec<(u64, f64)>,
    /// Scalar tags kept: each bin's mean over [`BINS`] bins (none before the tag's first value).
    #[serde(default)]
    pub tags: BTreeMap<String, Vec<Option<f64>>>,
}

/// `x` with `digits` significant digits.
fn round_sig(x: f64, digits: i32) -> f64 {
    if x == 0.0 || !x.is_finite() {
        return x;
    }
    let scale = 10f64.powi(digits - 1 - x.abs().log10().floor() as i32);
    (x * scale).round() / scale
}

impl RunRecord {
    /// The record of a run read from its folder, with the scalar tags `keep` says.
    pub fn from_result(name: &str, r: &RunResult, keep: &dyn Fn(&str) -> bool) -> RunRecord {
        let total = r.total_steps.max(1);
        let (mut games, mut sums) = (vec![0u32; RETURN_BINS], vec![0.0f64; RETURN_BINS]);
        for &(s, v) in &r.returns {
            let b = bin_of(s, total, RETURN_BINS);
            games[b] += 1;
            sums[b] += v;
        }
        let returns =
            games.iter().zip(&sums).map(|(&n, &s)| if n == 0 { 0.0 } else { round_sig(s / n as f64, 4) }).collect();
        let tags = r
            .scalars
            .iter()
            .filter(|(t, s)| keep(t) && !s.is_empty())
            .map(|(t, s)| {
                let bins = results::binned(s, total);
                let means = bins
                    .iter()
                    .map(|b| (!b.is_empty()).then(|| round_sig(b.iter().sum::<f64>() / b.len() as f64, 4)))
                    .collect();
                (t.clone(), means)
            })
            .collect();
        let last: Vec<f64> = r.returns.iter().rev().take(20).map(|x| x.1).collect();
        RunRecord {
            name: name.to_string(),
            env_steps: r.total_steps,
            score: results::final_score(r),
            eval: results::eval_score(r),
            last20: (!last.is_empty()).then(|| last.iter().sum::<f64>() / last.len() as f64),
            updates_per_sec: round_sig(r.updates_per_sec, 4),
            wall_secs: round_sig(r.wall_secs, 4),
            games,
            returns,
            evals: r.evals.clone(),
            tags,
        }
    }

    /// The final score of the run cut at env step `step`, at the bins' resolution: the mean
    /// return of the games of the bins that end in the last 10% of `[0, step]` (at least the
    /// bin ending at `step`), and further back bin by bin while fewer than 5 games are in it.
    /// None without a game before `step`.
    pub fn score_at(&self, step: u64) -> Option<f64> {
        let width = self.env_steps.max(1) as f64 / RETURN_BINS as f64;
        let last = ((step as f64 / width).round() as usize).min(RETURN_BINS);
        let span = ((0.1 * step as f64 / width).round() as usize).max(1);
        let (mut n, mut sum, mut b) = (0u64, 0.0, last);
        while b > 0 && (last - b < span || n < 5) {
            b -= 1;
            n += self.games[b] as u64;
            sum += self.games[b] as f64 * self.returns[b];
        }
        (n > 0).then(|| sum / n as f64)
    }

    /// The JSON line of the record.
    pub fn line(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// A record from its JSON line.
    pub fn parse(line: &str) -> Result<RunRecord> {
        let r: RunRecord = serde_json::from_str(line)?;
        if r.games.len() != RETURN_BINS || r.returns.len() != RETURN_BINS || r.tags.values().any(|t| t.len() != BINS) {
            return Err(anyhow!("run {}: its bins are not {RETURN_BINS} returns and {BINS} a tag", r.name));
        }
        Ok(r)
    }
}

/// The bin of env step `s` among `n` equal bins of `[0, total]` (as [`results::binned`]).
fn bin_of(s: u64, total: u64, n: usize) -> usize {
    ((s as f64 / total.max(1) as f64 * n as f64) as usize).min(n - 1)
}

/// The records of an archive folder (`DIR/runs.jsonl`), by run name; none when it has none.
pub fn read_all(dir: &Path) -> Result<BTreeMap<String, RunRecord>> {
    let path = dir.join(FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            let r = RunRecord::parse(l).with_context(|| format!("{}:{}: not a run record", path.display(), i + 1))?;
            Ok((r.name.clone(), r))
        })
        .collect()
}

/// Write an archive's records, sorted by name, atomically.
pub fn write_all(dir: &Path, records: &BTreeMap<String, RunRecord>) -> Result<()> {
    let text: String = records.values().map(|r| r.line() + "\n").collect();
    crate::run::dir::write_atomic(&dir.join(FILE), text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(returns: Vec<(u64, f64)>, total: u64) -> RunResult {
        let mut scalars = BTreeMap::new();
        scalars.insert("diag/x".to_string(), (1..=10).map(|i| (i * total / 10, i as f64 / 3.0)).collect());
        scalars.insert("losses/y".to_string(), vec![(5, 1.0)]);
        RunResult {
            dir: "r".into(),
            env: "CartPole-v1".into(),
            variant: wndqn_agents::normalization::Variant::Plain,
            precision: crate::config::Precision::Fp32,
            seed: 1,
            total_steps: total,
            returns,
            evals: vec![(total, 7.5)],
            scalars,
            updates_per_sec: 123.456789,
            wall_secs: 10.0,
            complete: true,
        }
    }

    #[test]
    fn a_record_keeps_the_scores_exactly_and_reads_back_as_written() {
        let total = 10_000;
        let returns: Vec<(u64, f64)> = (1..=400).map(|i| (i * 25, (i % 7) as f64 + 0.1 * i as f64)).collect();
        let r = result(returns.clone(), total);
        let rec = RunRecord::from_result("a__plain__s1", &r, &|t| t.starts_with("diag/"));
        assert_eq!(rec.score, results::final_score(&r));
        assert_eq!(rec.eval, Some(7.5));
        assert_eq!(rec.tags.keys().collect::<Vec<_>>(), ["diag/x"]);
        assert_eq!(rec.games.iter().sum::<u32>(), 400);
        let back = RunRecord::parse(&rec.line()).unwrap();
        assert_eq!(back.score, rec.score);
        assert_eq!(back.returns, rec.returns);
        assert_eq!(back, rec);
        assert_eq!(rec.tags["diag/x"][0], None, "no value before step 1000");
        // At the end, the binned score is the final score: the last 10% is whole bins.
        let at_end = rec.score_at(total).unwrap();
        assert!((at_end - rec.score.unwrap()).abs() < 1e-3 * rec.score.unwrap().abs(), "{at_end} vs {:?}", rec.score);
        // Halfway: the games of the bins of steps [4500, 5000).
        let want: Vec<f64> = returns.iter().filter(|(s, _)| *s >= 4500 && *s < 5000).map(|x| x.1).collect();
        let mid = rec.score_at(5000).unwrap();
        assert!((mid - want.iter().sum::<f64>() / want.len() as f64).abs() < 1e-2, "{mid}");
        assert_eq!(RunRecord::from_result("b", &result(vec![], total), &|_| false).score_at(total), None);
    }

    #[test]
    fn a_damaged_line_is_named() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join(FILE), "{\"name\": 1}\n").unwrap();
        let e = format!("{:#}", read_all(d.path()).unwrap_err());
        assert!(e.contains("runs.jsonl:1: not a run record"), "{e}");
        assert!(read_all(&d.path().join("none")).unwrap().is_empty());
    }
}
