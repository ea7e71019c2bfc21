//! The run folder as a file format, which training writes and sweeps, `compare`, `eval` and
//! the results read:
//!
//! - [`dir`]: the folder itself: its lock (holder pid and command), atomic writes, files opened
//!   without following links, where a run resumes from, the config keys a run may not change;
//! - [`summary`]: `summary.json` (how the run ended, its rates) and `progress.json` (how far a
//!   running one is);
//! - [`checkpoint`]: `checkpoints/ckpt-N/`: networks, optimizer, replay memory and the counters,
//!   each file named with its size and digest in the checkpoint's marker.

pub mod checkpoint;
pub mod dir;
pub mod summary;

pub use summary::{Measured, Summary};
