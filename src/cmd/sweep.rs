//! `wndqn sweep run|status|cancel|report|archive`: many runs (games x variants x seeds), on this machine
//! or a Slurm cluster, and the report across them. The runtime is in `src/sweep/`.

use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::{Args, Subcommand};

use crate::device::DeviceArg;
use crate::sweep::{self, report, scoring, Executor};

/// The sweep subcommands.
#[derive(Debug, Subcommand)]
pub enum SweepCmd {
    /// Run (or continue) every run of a sweep spec: runs finished are skipped, interrupted ones
    /// resumed, failed ones retried only with --retry-failed.
    Run(RunArgs),
    /// Each run's state (queued, running, done, failed, interrupted), env steps and return.
    Status {
        /// The sweep folder.
        dir: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Stop every run of the sweep cleanly (each writes a checkpoint; `sweep run` continues).
    Cancel {
        /// The sweep folder.
        dir: PathBuf,
    },
    /// Scores, aggregates with 95% stratified bootstrap intervals (IQM, median, mean,
    /// optimality gap), probability of improvement, performance profiles, sample efficiency.
    Report(ReportArgs),
    /// The finished runs as a small sweep folder of their own (the plan and `runs.jsonl`: one
    /// line a run with its scores, its returns and the tags asked for binned along training; no
    /// checkpoints or event files): status, report and `sweep run --dir` read it. Again: adds
    /// the runs finished since.
    Archive {
        /// The sweep folder.
        dir: PathBuf,
        /// The archive folder (new, empty, or an archive of the same sweep).
        #[arg(long)]
        out: PathBuf,
        /// Also keep this scalar tag, or every tag under a prefix ending in `/` (`diag/`);
        /// repeatable. The returns and scores are always kept.
        #[arg(long = "tag", value_name = "TAG")]
        tags: Vec<String>,
    },
}

/// `wndqn sweep run` flags.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The sweep spec (see configs/sweeps/).
    pub spec: PathBuf,
    /// The sweep folder (its plan, run folders, logs, report); the same folder continues it.
    #[arg(long)]
    pub dir: PathBuf,
    /// Where runs execute.
    #[arg(long, value_enum, default_value_t = Executor::Local)]
    pub executor: Executor,
    /// Local: runs at once (default: from the cores and the memory; each run's learner threads
    /// are then set so that jobs x threads fit the machine).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=256))]
    pub jobs: Option<u64>,
    /// Run failed runs again (their failure records are removed).
    #[arg(long)]
    pub retry_failed: bool,
    /// Print the plan (with Slurm: the job script and the sbatch command) and write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// With --dry-run: measure every variant (on the first game, as `bench e2e` does, this many
    /// seconds after its warm-up) and estimate the sweep's cost on this machine.
    #[arg(long, value_name = "SECONDS", num_args = 0..=1, default_missing_value = "20", value_parser = crate::util::seconds_arg, requires = "dry_run")]
    pub estimate: Option<f64>,
    /// Local: no progress bar.
    #[arg(long, short)]
    pub quiet: bool,
}

/// `wndqn sweep report` flags.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The sweep folder.
    pub dir: PathBuf,
    /// Output folder (default: DIR/report).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Print the aggregates as JSON instead of the Markdown report.
    #[arg(long)]
    pub json: bool,
    /// The score of a run: `final` (mean return of the games in the last 10% of its env steps)
    /// or `eval` (its last greedy evaluation).
    #[arg(long, value_enum, default_value_t = scoring::ScoreKind::Final)]
    pub score: scoring::ScoreKind,
    /// `auto`: human-normalized Atari-57 scores, the spec's `[normalize]` range for other games;
    /// `none`: raw returns.
    #[arg(long, value_enum, default_value_t = scoring::Normalize::Auto)]
    pub normalize: scoring::Normalize,
    /// Bootstrap resamples of the aggregates (rliable's default).
    #[arg(long, default_value_t = 50_000, value_parser = clap::value_parser!(u64).range(100..=1_000_000))]
    pub reps: u64,
    /// Seed of the bootstrap.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Also plot this scalar tag per variant over training, one figure per game with bands
    /// over seeds (`diag/feature_rank`, `diag/relative_update/fc1`, ...; repeatable).
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
}

/// Run a sweep subcommand.
pub fn run(cmd: SweepCmd, device: DeviceArg, rom_dir: Option<&Path>) -> Result<()> {
    match cmd {
        SweepCmd::Run(a) => {
            let local = sweep::local::LocalOptions {
                jobs: a.jobs.map(|j| j as usize),
                retry_failed: a.retry_failed,
                quiet: a.quiet,
                device,
                rom_dir: rom_dir.map(Path::to_path_buf),
            };
            sweep::run(
                &a.spec,
                &a.dir,
                sweep::RunOptions { executor: a.executor, dry_run: a.dry_run, estimate: a.estimate, local },
            )
        }
        SweepCmd::Status { dir, json } => sweep::status(&dir, json),
        SweepCmd::Cancel { dir } => sweep::cancel(&dir),
        SweepCmd::Archive { dir, out, tags } => {
            let plan = sweep::spec::Plan::read(&dir)?;
            sweep::archive::run(&dir, &plan, &sweep::archive::ArchiveOptions { out, tags })
        }
        SweepCmd::Report(a) => {
            let plan = sweep::spec::Plan::read(&a.dir)?;
            let opts = report::ReportOptions {
                out: a.out,
                json: a.json,
                score: a.score,
                normalize: a.normalize,
                reps: a.reps as usize,
                seed: a.seed,
                tags: a.tags,
            };
            report::run(&a.dir, &plan, &opts)
        }
    }
}
