//! TensorBoard event files: [`writer`] writes a run's (one writer per run; every tag the
//! project writes is listed in [`writer::TAGS`]), [`reader`] reads them back with their CRCs
//! checked (for `compare`, `sweep report` and resuming a run).

pub mod reader;
pub mod writer;

pub use writer::{Board, HParam};
