//! A finished run's results, read for judging it (`compare`, `sweep report`): only from a run
//! that is not being trained, whose summary says it is complete (or, when asked, as it is), and
//! whose event files are whole (every record's CRCs, every file the size the summary recorded);
//! and the scores a run is judged by.
//!
//! The **final score** of a run is the mean return of the training games that ended in the last
//! 10% of its env steps (the last 20 games when fewer than 5 ended there); its **eval score** is
//! its last periodic greedy evaluation.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Result};

use crate::util::say;

/// A run read for judging.
pub struct RunResult {
    /// Its folder.
    pub dir: PathBuf,
    /// `env.id` of its config.
    pub env: String,
    /// Its variant.
    pub variant: wndqn_agents::normalization::Variant,
    /// `learner.precision` of its config (its last segment).
    pub precision: crate::config::Precision,
    /// Its seed.
    pub seed: u64,
    /// Env steps it was trained for (at least 1).
    pub total_steps: u64,
    /// `(env step, return)` of each training game, in order.
    pub returns: Vec<(u64, f64)>,
    /// `(env step, mean return)` of each greedy evaluation.
    pub evals: Vec<(u64, f64)>,
    /// Every scalar tag's `(env step, value)` points (diagnostics, losses, ...).
    pub scalars: BTreeMap<String, Vec<(u64, f64)>>,
    /// Updates per second (its last segment).
    pub updates_per_sec: f64,
    /// Training time over every segment.
    pub wall_secs: f64,
    /// It reached its budget.
    pub complete: bool,
}

impl RunResult {
    /// What it is compared as: its variant, and its learner's precision where that is not
    /// fp32 (`weight_norm bf16`), so that runs differing only in precision are compared too.
    pub fn arm(&self) -> String {
        match self.precision {
            crate::config::Precision::Fp32 => self.variant.name().to_string(),
            p => format!("{} {}", self.variant.name(), p.name()),
        }
    }
}

/// Read a run for judging; refuses a run being trained, an unfinished one (unless
/// `allow_unfinished`, with a warning) and damaged event files, each naming the problem.
pub fn load(dir: &Path, allow_unfinished: bool) -> Result<RunResult> {
    crate::run::dir::ensure_run_folder(dir)?;
    let fix = format!(
        "finish it with `wndqn train --resume {}`, or leave it out",
        crate::util::shell_quote(&dir.display().to_string())
    );
    if let Some(pid) = crate::run::dir::holder(dir) {
        bail!("{} is being trained right now (pid {pid}): read it once that process has ended", dir.display());
    }
    let cfg = crate::config::load(&dir.join("config.toml"), &[])?;
    let summary = crate::run::summary::read(dir).map_err(|e| anyhow!("{e:#}; {fix}"))?;
    let complete = summary.complete;
    if !complete {
        let why = if summary.interrupted { "was interrupted" } else { "stopped with an error" };
        if !allow_unfinished {
            bail!(
                "{} {why} at {} env steps, before its budget: {fix} (or pass --allow-unfinished to take it as it is)",
                dir.display(),
                summary.env_steps
            );
        }
        say!(
            "warning: {} {why} at {} env steps; taken as it is (--allow-unfinished)",
            dir.display(),
            summary.env_steps
        );
    }
    let events = checked_events(dir, &summary)?;
    let scalars = crate::tensorboard::reader::all_scalar_values(&events);
    let tag = |t: &str| scalars.get(t).cloned().unwrap_or_default();
    Ok(RunResult {
        dir: dir.to_path_buf(),
        env: cfg.env.id.clone(),
        variant: cfg.agent.variant,
        precision: cfg.learner.precision,
        seed: cfg.run.seed,
        total_steps: summary.env_steps.max(1),
        returns: tag("charts/episodic_return"),
        evals: tag("eval/episodic_return"),
        scalars,
        updates_per_sec: summary.updates_per_sec,
        wall_secs: summary.wall_secs,
        complete,
    })
}

/// The events of a run, from event files that are whole: every record's CRCs match, no file
/// ends in a torn record, and each file the summary lists has the size it had then.
pub fn checked_events(dir: &Path, summary: &crate::run::Summary) -> Result<Vec<tensorboard_proto::event::Event>> {
    let files: Vec<PathBuf> = if summary.events.is_empty() {
        crate::tensorboard::reader::files(dir)
    } else {
        summary.events.iter().map(|e| dir.join(&e.file)).collect()
    };
    let mut events = Vec::new();
    for (i, f) in files.iter().enumerate() {
        let size = std::fs::metadata(f)
            .map(|m| m.len())
            .map_err(|e| anyhow!("event file {} is missing ({e}); the run's summary lists it", f.display()))?;
        if let Some(listed) = summary.events.get(i) {
            if listed.bytes != size {
                bail!(
                    "event file {} has {size} bytes, but the run ended with {} ({}): it was changed or cut after the run",
                    f.display(),
                    listed.bytes,
                    if size < listed.bytes { "shorter" } else { "longer" }
                );
            }
        }
        let ef = crate::tensorboard::reader::read_file(f)?;
        ef.require_whole(f)?;
        events.extend(ef.events);
    }
    Ok(events)
}

/// Run folders, each once (a folder given twice, under any path, counts once, with a warning).
pub fn distinct(dirs: &[PathBuf]) -> Vec<PathBuf> {
    let mut seen: Vec<(PathBuf, &PathBuf)> = Vec::new();
    let mut out = Vec::new();
    for d in dirs {
        let canon = d.canonicalize().unwrap_or_else(|_| d.clone());
        match seen.iter().find(|(c, _)| *c == canon) {
            Some((_, first)) => say!("warning: {} is {} again: counted once", d.display(), first.display()),
            None => {
                seen.push((canon, d));
                out.push(d.clone());
            }
        }
    }
    out
}

/// The returns of the games that ended in the last 10% of the steps up to `until` (the last 20
/// games before it when fewer than 5 ended there).
pub fn final_window(returns: &[(u64, f64)], until: u64) -> Vec<f64> {
    let cut = until - until / 10;
    let v: Vec<f64> = returns.iter().filter(|(s, _)| *s >= cut && *s <= until).map(|x| x.1).collect();
    if v.len() >= 5 {
        v
    } else {
        returns.iter().filter(|(s, _)| *s <= until).rev().take(20).map(|x| x.1).collect()
    }
}

fn avg(v: &[f64]) -> Option<f64> {
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

/// The final score of a run (see the module doc); none without a finished game.
pub fn final_score(r: &RunResult) -> Option<f64> {
    final_score_of(&r.returns, r.total_steps)
}

/// The final score of the training returns `(env step, return)` of a run of `total` env steps.
pub fn final_score_of(returns: &[(u64, f64)], total: u64) -> Option<f64> {
    avg(&final_window(returns, total))
}

/// The run's last greedy evaluation; none without one.
pub fn eval_score(r: &RunResult) -> Option<f64> {
    r.evals.last().map(|e| e.1)
}

/// Points on a curve: the x-axis of [`curve`] is split into this many equal step bins.
pub const BINS: usize = 50;

/// The values of `series` in each of [`BINS`] equal step bins over `[0, total]`, carried
/// forward through empty bins.
pub fn binned(series: &[(u64, f64)], total: u64) -> Vec<Vec<f64>> {
    let mut bins = vec![Vec::new(); BINS];
    for &(s, v) in series {
        let b = ((s as f64 / total.max(1) as f64 * BINS as f64) as usize).min(BINS - 1);
        bins[b].push(v);
    }
    for b in 1..BINS {
        if bins[b].is_empty() {
            bins[b] = bins[b - 1].clone();
        }
    }
    bins
}

/// Mean curve over [`BINS`] bins of the values in each (the seeds' bin means, or one seed's
/// values) with a 95% percentile-bootstrap band of that mean: a band that never leaves what the
/// values reach (a normal band over 2 seeds did).
pub fn mean_curve(label: String, color: [u8; 3], bins: &[Vec<f64>], total: u64) -> crate::plot::Series {
    let x: Vec<f64> = (0..BINS).map(|b| (b as f64 + 0.5) / BINS as f64 * total as f64).collect();
    let (mut mu, mut lo, mut hi) = (Vec::new(), Vec::new(), Vec::new());
    let boot = crate::stats::Bootstrap { reps: 2000, seed: 7, size: 0.95 };
    for bin in bins {
        let vals: Vec<f64> = bin.iter().copied().filter(|x| x.is_finite()).collect();
        let (m, l, h) = if vals.is_empty() {
            (f64::NAN, f64::NAN, f64::NAN)
        } else {
            let i = boot.interval(&vec![vals], crate::stats::mean);
            (i.point, i.low, i.high)
        };
        mu.push(m);
        lo.push(l);
        hi.push(h);
    }
    crate::plot::Series { label, color, x, mean: mu, lo, hi }
}

/// A scalar tag's curve over runs (`compare --tag`, `sweep report --tag`): each run's mean in
/// every bin, their mean with its bootstrap band over the runs; for one run, the mean of its
/// values with the band over them. None when no run has the tag.
pub fn tag_curve(
    label: &str,
    color: [u8; 3],
    runs: &[&RunResult],
    tag: &str,
    total: u64,
) -> Option<crate::plot::Series> {
    let per_run: Vec<Vec<Vec<f64>>> =
        runs.iter().filter_map(|r| r.scalars.get(tag)).filter(|s| !s.is_empty()).map(|s| binned(s, total)).collect();
    let bins: Vec<Vec<f64>> = match per_run.as_slice() {
        [] => return None,
        [one] => one.clone(),
        _ => (0..BINS).map(|b| per_run.iter().filter_map(|r| avg(&r[b])).collect()).collect(),
    };
    let n = per_run.len();
    Some(mean_curve(format!("{label} ({n} run{})", if n == 1 { "" } else { "s" }), color, &bins, total))
}

/// An error for a tag no run has, with the tags they have that are close to it.
pub fn unknown_tag(tag: &str, runs: &[&RunResult]) -> anyhow::Error {
    let known: std::collections::BTreeSet<&str> =
        runs.iter().flat_map(|r| r.scalars.keys().map(String::as_str)).collect();
    let near = wndqn_envs::roms::suggestions(tag, known.iter().copied());
    let hint = if near.is_empty() { String::new() } else { format!(" Did you mean: {}?", near.join(", ")) };
    let diag: Vec<&str> = known.iter().copied().filter(|t| t.starts_with("diag/")).collect();
    anyhow!(
        "no run has the scalar tag `{tag}`.{hint} Tags of these runs include: {}",
        if diag.is_empty() { known.iter().take(12).copied().collect::<Vec<_>>().join(", ") } else { diag.join(", ") }
    )
}

/// `tag` as a file-name part (`diag/weight_norm/fc1` -> `diag_weight_norm_fc1`).
pub fn tag_file(tag: &str) -> String {
    tag.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_final_window_is_the_last_tenth_or_the_last_twenty_games() {
        let r: Vec<(u64, f64)> = (1..=100).map(|i| (i * 10, i as f64)).collect();
        // Steps 900..=1000: games 90..=100.
        assert_eq!(final_window(&r, 1000), (90..=100).map(|i| i as f64).collect::<Vec<_>>());
        // Cut at 500: 450..=500 holds 6 games.
        assert_eq!(final_window(&r, 500).len(), 6);
        // A sparse run: the last 20 games.
        let sparse: Vec<(u64, f64)> = (1..=30).map(|i| (i * 10, i as f64)).collect();
        assert_eq!(final_window(&sparse, 10_000).len(), 20);
    }
}
