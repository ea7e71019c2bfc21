//! Where each run of a sweep stands, read from its folder (and from Slurm's queue for a Slurm
//! sweep): one definition for `sweep status`, for what `sweep run` starts, and for what
//! `sweep report` leaves out.
//!
//! In order: a run the folder's archive (`runs.jsonl`, [`super::record`]) holds is **done**; a
//! run whose folder lock is held is **running** (local); one that Slurm lists as
//! running or pending is **running** / **queued**; one whose summary says complete is **done**;
//! one with a failure record (`DIR/failed/NAME`: exit status and the tail of its log) is
//! **failed**; one with a checkpoint or a summary is **interrupted** (it is resumed); anything
//! else is **queued**.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::spec::{Plan, RunSpec};
use crate::run::summary::{self, Progress};

/// A run's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Not started (or pending in Slurm's queue).
    Queued,
    /// A process is training it.
    Running,
    /// Stopped before its budget; resumed by the next `sweep run`.
    Interrupted,
    /// Failed; retried only with `--retry-failed`.
    Failed,
    /// Complete.
    Done,
}

impl State {
    /// The word for tables.
    pub fn name(self) -> &'static str {
        match self {
            State::Queued => "queued",
            State::Running => "running",
            State::Interrupted => "interrupted",
            State::Failed => "failed",
            State::Done => "done",
        }
    }
}

/// What Slurm says of a run's array task.
#[derive(Debug, Clone, PartialEq)]
pub struct SlurmTask {
    /// `JOB_TASK`.
    pub id: String,
    /// `RUNNING`, `PENDING`, ...
    pub state: String,
    /// Why it pends, or where it runs.
    pub reason: String,
}

/// One run's status.
#[derive(Debug, Clone, Serialize)]
pub struct RunStatus {
    /// Its name (`{game}__{variant}__s{seed}`).
    pub name: String,
    /// Its state.
    pub state: State,
    /// Env steps so far.
    pub env_steps: u64,
    /// Its budget.
    pub total_env_steps: u64,
    /// Its latest training return (running), or the mean of its last 20 games.
    pub last_return: Option<f64>,
    /// Its env steps per second now (running runs).
    pub env_steps_per_sec: Option<f64>,
    /// The process training it (local).
    pub pid: Option<u32>,
    /// Its Slurm task and state.
    pub slurm: Option<String>,
    /// Why it failed (the first line of its failure record).
    pub failure: Option<String>,
}

/// The folders of a sweep, and the runs its archive holds (`runs.jsonl`: name, env steps, mean
/// of the last 20 games).
pub struct Folders {
    /// The sweep folder.
    pub dir: PathBuf,
    archived: BTreeMap<String, (u64, Option<f64>)>,
}

impl Folders {
    /// The folders of the sweep in `dir` (an archive's records that cannot be read count as
    /// none here; the report names the damage).
    pub fn new(dir: &Path) -> Folders {
        let archived = super::record::read_all(dir)
            .unwrap_or_default()
            .into_iter()
            .map(|(k, r)| (k, (r.env_steps, r.last20)))
            .collect();
        Folders { dir: dir.to_path_buf(), archived }
    }
    /// A run's folder.
    pub fn run(&self, name: &str) -> PathBuf {
        self.dir.join("runs").join(name)
    }
    /// A run's config.
    pub fn config(&self, name: &str) -> PathBuf {
        self.dir.join("configs").join(format!("{name}.toml"))
    }
    /// A run's output, all segments.
    pub fn log(&self, name: &str) -> PathBuf {
        self.dir.join("logs").join(format!("{name}.log"))
    }
    /// A run's failure record.
    pub fn failed(&self, name: &str) -> PathBuf {
        self.dir.join("failed").join(name)
    }
}

/// The status of `r`, given what Slurm says of the sweep's tasks (by run name).
pub fn status(f: &Folders, plan: &Plan, r: &RunSpec, slurm: &BTreeMap<String, SlurmTask>) -> RunStatus {
    let run = f.run(&r.name);
    let total = plan.config(r).map(|c| c.run.total_env_steps).unwrap_or(0);
    if let Some(&(env_steps, last_return)) = f.archived.get(&r.name) {
        return RunStatus {
            name: r.name.clone(),
            state: State::Done,
            env_steps,
            total_env_steps: total,
            last_return,
            env_steps_per_sec: None,
            pid: None,
            slurm: None,
            failure: None,
        };
    }
    let summary = summary::read(&run).ok();
    let progress = Progress::read(&run);
    let pid = crate::run::dir::holder(&run);
    let task = slurm.get(&r.name);
    let failure = std::fs::read_to_string(f.failed(&r.name)).ok().map(|t| t.lines().next().unwrap_or("").to_string());
    let state = match (pid, task.map(|t| t.state.as_str()), &summary, &failure) {
        (Some(_), _, _, _) | (_, Some("RUNNING" | "COMPLETING"), _, _) => State::Running,
        (_, Some(_), _, _) => State::Queued,
        (_, _, Some(s), _) if s.complete => State::Done,
        (_, _, _, Some(_)) => State::Failed,
        _ if summary.is_some() || !crate::run::checkpoint::list(&run).is_empty() => State::Interrupted,
        _ => State::Queued,
    };
    let checkpoint_steps = || crate::run::checkpoint::find(&run, None, &mut |_| {}).map(|(_, s)| s.env_steps).ok();
    let env_steps = match state {
        State::Running => progress.as_ref().map(|p| p.env_steps),
        // A queued run may be a requeued one: its folder says how far it got, whatever the queue.
        State::Done | State::Interrupted | State::Failed | State::Queued => {
            summary.as_ref().map(|s| s.env_steps).or_else(checkpoint_steps)
        }
    };
    let last_return = match state {
        State::Running => progress.as_ref().and_then(|p| p.last_return),
        _ => summary.as_ref().and_then(|s| s.last20_mean_return),
    };
    RunStatus {
        name: r.name.clone(),
        state,
        env_steps: env_steps.unwrap_or(0),
        total_env_steps: total,
        last_return,
        env_steps_per_sec: progress.filter(|_| state == State::Running).map(|p| p.env_steps_per_sec),
        pid,
        slurm: task.map(|t| {
            format!(
                "{} {}{}",
                t.id,
                t.state,
                if t.reason.is_empty() { String::new() } else { format!(" ({})", t.reason) }
            )
        }),
        failure: failure.filter(|_| state == State::Failed),
    }
}

/// The status of every run of the plan in `dir`.
pub fn all(dir: &Path, plan: &Plan, slurm: &BTreeMap<String, SlurmTask>) -> Vec<RunStatus> {
    let f = Folders::new(dir);
    plan.runs().iter().map(|r| status(&f, plan, r, slurm)).collect()
}
