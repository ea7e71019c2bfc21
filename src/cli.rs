//! The clap command line: global flags and one subcommand per job.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

use crate::device::DeviceArg;

/// Weight-normalized DQN on libtorch: actor threads play Atari (ALE), a learner thread trains,
/// TensorBoard shows the curves.
#[derive(Debug, Parser)]
#[command(name = "wndqn", version, about, propagate_version = true)]
pub struct Cli {
    /// Where the learner runs: `auto` picks CUDA when a GPU is visible.
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
    /// List the playable games and their ids.
    Games {
        /// Also list ROMs that this ALE version cannot play.
        #[arg(long)]
        all: bool,
    },
}

/// Run the parsed command.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Games { all } => crate::games::run(cli.rom_dir.as_deref(), all),
    }
}
