//! One module per subcommand: its clap flags and what it does. The runtime they drive lives
//! beside them (`train/` for a run, `sweep/` for many, `play.rs` for greedy games, `config/`,
//! `run/`, `tensorboard/`, ...).

pub mod bench;
pub mod check;
pub mod compare;
pub mod eval;
pub mod games;
pub mod info;
pub mod sweep;
pub mod train;
