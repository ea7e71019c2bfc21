//! The clap command line: global flags and one subcommand per job.

use crate::util::out;
use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};

use crate::device::DeviceArg;

/// Weight-normalized DQN on libtorch: actor threads play Atari (ALE), a learner thread trains,
/// TensorBoard shows the curves.
#[derive(Debug, Parser)]
#[command(name = "wndqn", version, about, propagate_version = true)]
pub struct Cli {
    /// Where the learner runs: `auto` picks CUDA when a GPU is visible (actors always use the CPU).
    #[arg(long, global = true, value_enum, default_value_t = DeviceArg::Auto)]
    pub device: DeviceArg,
    /// Folder of Atari ROMs (`pong.bin`, ...). Default: $WNDQN_ROM_DIR, else the venv's ale_py/roms.
    #[arg(long, global = true, value_name = "DIR")]
    pub rom_dir: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Train a DQN agent on a TOML config; writes runs/{env}__{variant}__s{seed}__{time}/.
    Train(TrainCmd),
    /// Greedy evaluation of a run's checkpoint on whole games (mean, median, std, min, max; video).
    Eval(crate::eval_cmd::EvalCmd),
    /// Compare variants over seeds: launch them (--config) or compare finished run folders.
    Compare(crate::compare::CompareCmd),
    /// Check configs without training: keys, values, environment and ROM, networks, memory.
    Check(crate::check::CheckCmd),
    /// Measure throughput: environments, the learner, the replay memory, or the whole system.
    #[command(subcommand)]
    Bench(crate::bench::BenchCmd),
    /// Versions, devices and paths for a bug report: libtorch, CUDA and GPUs, cuDNN, CPU
    /// threads, ALE, the ROM folder.
    Info {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the playable games and their ids.
    Games {
        /// Also check every ROM's MD5 with ALE (a ROM it does not know is refused at load).
        #[arg(long)]
        all: bool,
    },
}

/// `wndqn train` flags.
#[derive(Debug, Args)]
pub struct TrainCmd {
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
    pub variant: Option<wndqn_agents::qnet::Variant>,
    /// Override a config value: `--set agent.lr=3e-4` (repeatable).
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    pub sets: Vec<String>,
    /// Master seed (overrides run.seed).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Parent folder of run folders.
    #[arg(long, default_value = "runs")]
    pub runs_dir: PathBuf,
    /// No progress bar (for scripts); the summary is still printed.
    #[arg(long, short)]
    pub quiet: bool,
}

/// Run the parsed command.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Games { all } => crate::games::run(cli.rom_dir.as_deref(), all),
        Command::Info { json } => crate::info::run(cli.rom_dir.as_deref(), json),
        Command::Bench(b) => crate::bench::run(b, cli.device, cli.rom_dir.as_deref()),
        Command::Eval(e) => crate::eval_cmd::run(e, cli.device, cli.rom_dir.as_deref()),
        Command::Check(c) => crate::check::run(c, cli.rom_dir.as_deref()),
        Command::Compare(c) => crate::compare::run(c, cli.device, cli.rom_dir.as_deref()),
        Command::Train(t) => {
            let args = crate::train::TrainArgs {
                config: t.config,
                resume: t.resume,
                save_replay: t.save_replay,
                variant: t.variant,
                sets: t.sets,
                seed: t.seed,
                runs_dir: t.runs_dir,
                quiet: t.quiet,
                device: cli.device,
                rom_dir: cli.rom_dir,
            };
            let s = crate::train::train(&args)?;
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
                "  time: actors waited {:.0}% for the learner; learner busy {:.0}%, waited {:.0}% for data",
                100.0 * s.actor_wait_frac,
                100.0 * s.learner_busy_frac,
                100.0 * s.learner_wait_frac
            );
            out!(
                "  view: make tensorboard   (or .venv/bin/tensorboard --logdir {})",
                crate::util::shell_quote(&s.run_dir.display().to_string())
            );
            Ok(())
        }
    }
}
