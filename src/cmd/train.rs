//! `wndqn train`: one run, then its summary on stdout.

use std::path::{Path, PathBuf};

use anyhow::Result;
use wndqn_agents::normalization::Variant;

use crate::device::DeviceArg;
use crate::train::{Request, RunOptions, Target};
use crate::util::{out, shell_quote};

/// `wndqn train` flags: the command-line settings of a training run.
#[derive(Debug, Clone, clap::Args)]
pub struct TrainArgs {
    /// The run's config (see configs/). Default: configs/pong.toml, or the run's own with --resume.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Continue a run folder from its newest complete checkpoint (same folder, same curves).
    #[arg(long, value_name = "RUN_DIR")]
    pub resume: Option<PathBuf>,
    /// Also save the replay memory with the final checkpoint (about 7 KB per stored Atari
    /// transition), so a resumed run needs no new warm-up.
    #[arg(long)]
    pub save_replay: bool,
    /// Network variant (overrides agent.variant).
    #[arg(long, value_enum)]
    pub variant: Option<Variant>,
    /// Override a config value: `--set agent.lr=3e-4` (repeatable).
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    pub sets: Vec<String>,
    /// Master seed (overrides run.seed).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Parent folder of run folders.
    #[arg(long, default_value = "runs")]
    pub runs_dir: PathBuf,
    /// Train into exactly this folder: a new run when it holds no checkpoint, else continue it
    /// (as --resume does), nothing to do when it is complete. For sweeps, whose runs have fixed
    /// folders and may be started or resumed by whichever process gets to them.
    #[arg(long, value_name = "RUN_DIR", conflicts_with_all = ["resume", "runs_dir"])]
    pub run_dir: Option<PathBuf>,
    /// No progress bar (for scripts); the summary is still printed.
    #[arg(long, short)]
    pub quiet: bool,
}

impl TrainArgs {
    /// The training request these flags ask for, on `device` with Atari's ROMs in `rom_dir`.
    /// Without --config, a run folder that exists (--resume, or --run-dir on a started run)
    /// continues with its own config; with neither, configs/pong.toml.
    pub fn request(&self, device: DeviceArg, rom_dir: Option<&Path>) -> Result<Request> {
        if let Some(run) = &self.resume {
            crate::run::dir::ensure_run_folder(run)?;
        }
        let own = self.resume.as_ref().or(self.run_dir.as_ref()).map(|r| r.join("config.toml")).filter(|p| p.is_file());
        let path = match (&self.config, own) {
            (Some(p), _) => p.clone(),
            (None, Some(own)) => own,
            (None, None) => PathBuf::from("configs/pong.toml"),
        };
        let target = match (&self.resume, &self.run_dir) {
            (Some(run), _) => Target::Resume(run.clone()),
            (None, Some(dir)) => Target::At(dir.clone()),
            (None, None) => Target::New(self.runs_dir.clone()),
        };
        Ok(Request {
            cfg: crate::config::load_run(&path, &self.sets, self.variant, self.seed)?,
            target,
            device: device.resolve()?,
            rom_dir: rom_dir.map(Path::to_path_buf),
            opts: RunOptions { quiet: self.quiet, measure_secs: None, save_replay: self.save_replay },
        })
    }
}

/// Train, and print what the run did.
pub fn run(args: &TrainArgs, device: DeviceArg, rom_dir: Option<&Path>) -> Result<()> {
    let s = crate::train::train(args.request(device, rom_dir)?)?;
    out!(
        "{} {}: {} env steps, {} updates, {} games in {:.0}s ({:.0} env steps/s, {:.1} updates/s)",
        if s.interrupted { "interrupted" } else { "finished" },
        s.run_dir.display(),
        s.env_steps,
        s.updates,
        s.episodes,
        s.wall_secs,
        s.env_steps_per_sec,
        s.updates_per_sec
    );
    let games = match s.last20_mean_return {
        Some(m) => format!("mean return of the last 20 games: {m:.2}"),
        None => "no training game finished yet".to_string(),
    };
    let eval = s.final_eval_mean.map(|m| format!("; last greedy evaluation: {m:.2}")).unwrap_or_default();
    out!("  {games}{eval}");
    out!(
        "  time: actors waited {:.0}% for the learner; learner busy {:.0}%, waited {:.0}% for data; diagnostics {:.1}% of update time",
        100.0 * s.actor_wait_frac,
        100.0 * s.learner_busy_frac,
        100.0 * s.learner_wait_frac,
        100.0 * s.diagnostics_share
    );
    out!(
        "  view: make tensorboard   (or .venv/bin/tensorboard --logdir {})",
        shell_quote(&s.run_dir.display().to_string())
    );
    Ok(())
}
