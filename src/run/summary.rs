//! `RUN/summary.json`: what a run reports when a segment ends, and what `compare` and `sweep`
//! read to know whether a run is finished and whether its event files are whole; and
//! `RUN/progress.json`, where a running segment says how far it is every few seconds (for
//! `sweep status` and a sweep's progress line).
//!
//! Life cycle: a resumed segment removes the summary once its checkpoint is loaded (a run
//! without one is running, or died); every segment that ends writes it atomically, listing its
//! event files with their sizes, so that a reader can tell a cut or replaced event file from the
//! one the run wrote. A run that reached its budget but lost its summary (killed between its
//! last checkpoint and the summary) is finished by `wndqn train --resume` from the checkpoint
//! and the event files ([`from_checkpoint`]).

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Result};
use serde::{Deserialize, Serialize};

use super::checkpoint::State;

/// File name of the summary in a run folder.
pub const FILE: &str = "summary.json";
/// File name of the progress of a running segment.
pub const PROGRESS: &str = "progress.json";

/// How far a running segment is (rewritten every few seconds).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Progress {
    /// Env steps so far (all segments).
    pub env_steps: u64,
    /// The run's budget.
    pub total_env_steps: u64,
    /// Learner updates so far.
    pub updates: u64,
    /// Env steps per second over the last interval.
    pub env_steps_per_sec: f64,
    /// Return of the latest training game.
    pub last_return: Option<f64>,
    /// When this was written, seconds since the Unix epoch.
    pub time: f64,
}

impl Progress {
    /// Write it into `run` (a temporary file renamed into place; not fsynced: it is only news).
    pub fn write(&self, run: &Path) -> Result<()> {
        let tmp = run.join(format!(".{PROGRESS}.tmp"));
        std::fs::write(&tmp, serde_json::to_vec(self)?)?;
        std::fs::rename(&tmp, run.join(PROGRESS))?;
        Ok(())
    }

    /// The progress a run folder holds, if any.
    pub fn read(run: &Path) -> Option<Progress> {
        serde_json::from_slice(&std::fs::read(run.join(PROGRESS)).ok()?).ok()
    }
}

/// One event file as the run left it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct EventFileInfo {
    /// File name in the run folder.
    pub file: String,
    /// Size in bytes.
    pub bytes: u64,
}

/// What a finished (or interrupted) segment reports; written to `summary.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    /// The run folder (written lossily where its path is not UTF-8).
    #[serde(serialize_with = "lossy_path")]
    pub run_dir: PathBuf,
    pub env: String,
    pub variant: wndqn_agents::normalization::Variant,
    pub seed: u64,
    pub env_steps: u64,
    pub updates: u64,
    pub episodes: u64,
    /// A stop request (Ctrl-C, SIGTERM, SIGHUP) ended this segment.
    pub interrupted: bool,
    /// The run is done: it reached `run.total_env_steps` (or `run.stop_at_return`) without an
    /// error.
    pub complete: bool,
    /// Training time over every segment of the run, seconds.
    pub wall_secs: f64,
    /// Training time of the last segment, seconds.
    pub segment_wall_secs: f64,
    pub env_steps_per_sec: f64,
    pub updates_per_sec: f64,
    /// Mean return of the last 20 training games (none before the first game ends).
    pub last20_mean_return: Option<f64>,
    /// Best mean return over 20 consecutive training games.
    pub best20_mean_return: Option<f64>,
    /// Env step at which the 20-game mean first reached `run.stop_at_return` (if set and reached).
    pub solved_at_step: Option<u64>,
    pub actor_wait_frac: f64,
    pub learner_wait_frac: f64,
    pub learner_busy_frac: f64,
    /// The learner's time on diagnostics, as a share of its time on updates (this segment).
    pub diagnostics_share: f64,
    pub final_eval_mean: Option<f64>,
    /// Rates from the first learner update to the end (steady state, warm-up excluded).
    pub measured: Option<Measured>,
    /// The event files of the run and their sizes when this summary was written.
    pub events: Vec<EventFileInfo>,
    /// Why the segment stopped before its budget with an error (a diverged loss, a full disk):
    /// the error as the run printed it; absent when it did not fail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

fn lossy_path<S: serde::Serializer>(p: &Path, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&p.to_string_lossy())
}

/// The run's event files with their sizes now.
pub fn event_listing(run: &Path) -> Vec<EventFileInfo> {
    crate::tensorboard::reader::files(run)
        .into_iter()
        .map(|p| EventFileInfo {
            file: p.file_name().unwrap_or_default().to_string_lossy().into_owned(),
            bytes: std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0),
        })
        .collect()
}

/// The mean of the last 20 of `returns`; none without returns.
pub fn last20(returns: &[f64]) -> Option<f64> {
    let tail = &returns[returns.len().saturating_sub(20)..];
    (!tail.is_empty()).then(|| tail.iter().sum::<f64>() / tail.len() as f64)
}

/// The best mean over 20 consecutive returns, and the step at which that mean first reached
/// `goal`; `returns` are `(env step, return)` in order.
pub fn best20(returns: &[(u64, f64)], goal: Option<f64>) -> (Option<f64>, Option<u64>) {
    let (mut best, mut solved) = (None::<f64>, None);
    for i in 20..=returns.len() {
        let m = returns[i - 20..i].iter().map(|r| r.1).sum::<f64>() / 20.0;
        best = Some(best.map_or(m, |b| b.max(m)));
        if solved.is_none() && goal.is_some_and(|g| m >= g) {
            solved = Some(returns[i - 1].0);
        }
    }
    (best, solved)
}

/// The summary of a run that reached its budget, from its newest checkpoint and event files
/// (for a run that was killed after that checkpoint, before writing its summary).
pub fn from_checkpoint(
    run: &Path,
    state: &State,
    env: &str,
    variant: wndqn_agents::normalization::Variant,
    goal: Option<f64>,
) -> Result<Summary> {
    let returns = crate::tensorboard::reader::scalars(run, "charts/episodic_return")?;
    let (best, solved) = best20(&returns, goal);
    let wall = state.wall_secs.max(1e-9);
    Ok(Summary {
        run_dir: run.to_path_buf(),
        env: env.to_string(),
        variant,
        seed: state.seed,
        env_steps: state.env_steps,
        updates: state.updates,
        episodes: state.episodes,
        interrupted: false,
        complete: true,
        wall_secs: state.wall_secs,
        segment_wall_secs: 0.0,
        env_steps_per_sec: state.env_steps as f64 / wall,
        updates_per_sec: state.updates as f64 / wall,
        last20_mean_return: last20(&state.recent_returns),
        best20_mean_return: best,
        solved_at_step: solved,
        actor_wait_frac: 0.0,
        learner_wait_frac: 0.0,
        learner_busy_frac: 0.0,
        diagnostics_share: 0.0,
        final_eval_mean: None,
        measured: None,
        events: event_listing(run),
        error: None,
    })
}

/// Read a run's summary; the error says why a run without a usable one cannot be read.
pub fn read(run: &Path) -> Result<Summary> {
    let p = run.join(FILE);
    let text = std::fs::read_to_string(&p).map_err(|e| {
        anyhow!("{} has no readable {FILE} ({e}): the run is still going or did not end cleanly", run.display())
    })?;
    serde_json::from_str(&text)
        .map_err(|e| anyhow!("{}: {e} (an incomplete or damaged summary, e.g. from a full disk)", p.display()))
}

/// Steady-state rates between two moments of a run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Measured {
    pub secs: f64,
    pub env_steps_per_sec: f64,
    pub updates_per_sec: f64,
    /// Fraction of the actors' time spent waiting for the learner (replay-ratio throttle).
    pub actor_wait_frac: f64,
    /// Fraction of the learner's time spent waiting for data.
    pub learner_wait_frac: f64,
    /// Fraction of the learner's time spent in updates.
    pub learner_busy_frac: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn twenty_game_means_and_the_step_that_reached_the_goal() {
        let r: Vec<(u64, f64)> = (0..30).map(|i| (10 * i as u64, i as f64)).collect();
        let (best, solved) = best20(&r, Some(14.5));
        assert_eq!(best, Some((10..30).sum::<u64>() as f64 / 20.0));
        // The mean of games 5..25 is 14.5: the 25th game ends at step 240.
        assert_eq!(solved, Some(240));
        assert_eq!(best20(&r[..19], Some(0.0)), (None, None));
        assert_eq!(last20(&[]), None);
        assert_eq!(last20(&[1.0, 3.0]), Some(2.0));
    }
}
