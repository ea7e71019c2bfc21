//! [`super::cuda_graph`] where its C++ was not built (a CPU-only libtorch, or the torch wheel's
//! CUDA headers missing): the same API, with every constructor an error, so that callers need
//! no `#[cfg]` of their own. A learner asking for a CUDA graph then says why it runs eagerly.

use anyhow::{bail, Result};

/// Whether the CUDA-graph extension is built (it is not, here).
pub const BUILT: bool = false;

const WHY: &str = "this wndqn was built without the CUDA-graph extension (the torch wheel's CUDA headers were missing; run scripts/setup.sh)";

/// A CUDA graph; none can be made in this build.
pub struct CudaGraph(());

impl CudaGraph {
    /// An error: no CUDA-graph extension.
    pub fn new(_device: usize) -> Result<CudaGraph> {
        bail!("{WHY}")
    }
    /// Unreachable without a graph.
    pub fn warm_up<R>(&self, _f: impl FnOnce() -> R) -> Result<R> {
        bail!("{WHY}")
    }
    /// Unreachable without a graph.
    pub fn capture(&mut self, _f: impl FnOnce()) -> Result<()> {
        bail!("{WHY}")
    }
    /// Unreachable without a graph.
    pub fn replay(&self) -> Result<()> {
        bail!("{WHY}")
    }
}

/// A copy stream; none can be made in this build.
pub struct Stager(());

impl Stager {
    /// An error: no CUDA extension.
    pub fn new(_device: usize) -> Result<Stager> {
        bail!("{WHY}")
    }
    /// Unreachable without a stager.
    pub fn stage(&self, _slot: usize, _dst: &[&tch::Tensor], _src: &[&tch::Tensor]) -> Result<()> {
        bail!("{WHY}")
    }
    /// Unreachable without a stager.
    pub fn wait_copied(&self, _slot: usize) -> Result<()> {
        bail!("{WHY}")
    }
    /// Unreachable without a stager.
    pub fn mark_consumed(&self, _slot: usize) -> Result<()> {
        bail!("{WHY}")
    }
}
