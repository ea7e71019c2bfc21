//! The clap command line: global flags and one subcommand per job (each in `cmd/`).

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

use crate::cmd;
use crate::device::DeviceArg;

/// Weight-normalized DQN on libtorch: actor threads play Atari (ALE), a learner thread trains,
/// TensorBoard shows the curves.
#[derive(Debug, Parser)]
#[command(name = "wndqn", version, about, propagate_version = true)]
pub struct Cli {
    /// Where the learner runs: `auto` picks CUDA when a GPU is visible (actors always use the CPU).
    #[arg(long, global = true, value_enum, default_value_t = DeviceArg::Auto)]
    pub device: DeviceArg,
    /// Folder of Atari ROMs (`pong.bin`, ...). Default: $WNDQN_ROM_DIR, else the active venv's or
    /// this checkout's ale_py/roms.
    #[arg(long, global = true, value_name = "DIR")]
    pub rom_dir: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Train a DQN agent on a TOML config; writes runs/{env}__{variant}__s{seed}__{time}/.
    Train(cmd::train::TrainArgs),
    /// Greedy evaluation of a run's checkpoint on whole games (mean, median, std, min, max; video).
    Eval(cmd::eval::EvalCmd),
    /// Compare variants over seeds: launch them (--config) or compare finished run folders.
    Compare(cmd::compare::CompareCmd),
    /// Sweeps: games x variants x seeds on this machine or a Slurm cluster, and their report.
    #[command(subcommand)]
    Sweep(cmd::sweep::SweepCmd),
    /// Check configs without training: keys, values, environment and ROM, networks, memory.
    Check(cmd::check::CheckCmd),
    /// Measure throughput: environments, the learner, the replay memory, or the whole system.
    #[command(subcommand)]
    Bench(cmd::bench::BenchCmd),
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

/// Run the parsed command.
impl Command {
    /// Whether the command stops cleanly on Ctrl-C or a signal (it calls `signals::install`);
    /// the others simply end.
    pub fn stops_cleanly(&self) -> bool {
        use crate::sweep::Executor;
        use cmd::bench::BenchCmd;
        use cmd::sweep::SweepCmd;
        match self {
            Command::Train(_) | Command::Compare(_) | Command::Bench(BenchCmd::E2e(_)) => true,
            Command::Sweep(SweepCmd::Run(r)) => r.executor == Executor::Local,
            _ => false,
        }
    }
}

pub fn run(cli: Cli) -> Result<()> {
    let rom_dir = cli.rom_dir.or_else(crate::roms::default_dir);
    let rom_dir = rom_dir.as_deref();
    match cli.command {
        Command::Games { all } => cmd::games::run(rom_dir, all),
        Command::Info { json } => cmd::info::run(rom_dir, json),
        Command::Bench(b) => cmd::bench::run(b, cli.device, rom_dir),
        Command::Eval(e) => cmd::eval::run(e, cli.device, rom_dir),
        Command::Check(c) => cmd::check::run(c, cli.device, rom_dir),
        Command::Sweep(s) => cmd::sweep::run(s, cli.device, rom_dir),
        Command::Compare(c) => cmd::compare::run(c, cli.device, rom_dir),
        Command::Train(t) => cmd::train::run(&t, cli.device, rom_dir),
    }
}
