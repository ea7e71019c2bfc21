//! The learner's update as one CUDA graph: captured once, replayed for every update.
//!
//! On a GPU the eager update is launch-bound: a few hundred small kernels, each launched from the
//! CPU, for a batch of 32. [`Dqn::update_on_device`] is the same update with nothing read back
//! and nothing decided on the host (clip factor, bias corrections and statistics on the device),
//! so its launch sequence can be recorded once ([`crate::ext::cuda_graph`]) and replayed with one call.
//! What stays on the host runs between replays: counting, target syncs
//! ([`Dqn::finish_device_update`]), weight publication, checkpoints, and reading the summed
//! statistics every `log.scalars_every` env steps ([`GraphedUpdate::take_stats`]).
//!
//! Inputs: the graph reads fixed device tensors. Each batch arrives as the replay thread leaves
//! it, in pinned host memory ([`crate::replay::BatchPrep`]), and is copied to the device on
//! a separate copy stream into one of two slots ([`Stager`]), so that the copy of batch n+1
//! overlaps the replay of update n; the compute stream then waits for the slot, copies it into
//! the static inputs (device to device, about 2 MB) and replays. Without a copy stream (if one
//! cannot be made) the copies run on the compute stream, in order.

use crate::dqn::{stats_from_sums, Dqn, UpdateStats, STAT_SUMS};
use crate::ext::{CudaGraph, Stager};
use crate::replay::TensorBatch;
use anyhow::{bail, Result};
use tch::{Device, Kind, Tensor};

/// Real updates run eagerly on the capture stream before capturing (they count as updates).
pub const WARM_UP: u64 = 3;

/// A captured update with its static inputs and statistics sums.
pub struct GraphedUpdate {
    graph: CudaGraph,
    inputs: TensorBatch,
    sums: Tensor,
    summed: u64,
    staging: Option<Staging>,
}

/// The copy stream and its two slots of device buffers.
struct Staging {
    stager: Stager,
    slots: [TensorBatch; 2],
    next: usize,
}

impl GraphedUpdate {
    /// Warm up with [`WARM_UP`] real updates on `first` (a batch as the replay thread leaves it),
    /// then capture one update that reads static copies of it.
    pub fn new(dqn: &mut Dqn, first: &TensorBatch) -> Result<GraphedUpdate> {
        let device = dqn.online_vs.device();
        let Device::Cuda(index) = device else { bail!("CUDA graphs need a learner on a CUDA device, not {device:?}") };
        dqn.make_capturable();
        let inputs = first.shallow_clone().map(|t| t.to_device(device).copy());
        let sums = Tensor::zeros([STAT_SUMS], (Kind::Double, device));
        let mut graph = CudaGraph::new(index)?;
        graph.warm_up(|| -> Result<()> {
            for _ in 0..WARM_UP {
                dqn.update_on_device(&inputs, &sums)?;
                dqn.finish_device_update();
            }
            Ok(())
        })??;
        let mut captured = Ok(());
        graph.capture(|| captured = dqn.update_on_device(&inputs, &sums))?;
        captured?;
        let staging = Stager::new(index).ok().map(|stager| Staging {
            stager,
            slots: [0, 1].map(|_| inputs.shallow_clone().map(|t| t.zeros_like())),
            next: 0,
        });
        Ok(GraphedUpdate { graph, inputs, sums, summed: WARM_UP, staging })
    }

    /// Whether batches are copied on a copy stream (overlapping the compute).
    pub fn staged(&self) -> bool {
        self.staging.is_some()
    }

    /// One update on `b` (as the replay thread leaves it: pinned host memory on a GPU learner):
    /// copy it into the static inputs, replay, then the host's part of the update. Nothing here
    /// waits for the GPU.
    pub fn update(&mut self, dqn: &mut Dqn, b: &TensorBatch) -> Result<()> {
        for (dst, src) in self.inputs.tensors().into_iter().zip(b.tensors()) {
            if dst.size() != src.size() || dst.kind() != src.kind() {
                bail!(
                    "a batch of {:?} {:?} for a graph captured on {:?} {:?}",
                    src.size(),
                    src.kind(),
                    dst.size(),
                    dst.kind()
                );
            }
        }
        match &mut self.staging {
            Some(st) => {
                let k = st.next;
                st.next ^= 1;
                st.stager.stage(k, &st.slots[k].tensors(), &b.tensors())?;
                st.stager.wait_copied(k)?;
                for (dst, src) in self.inputs.tensors().into_iter().zip(st.slots[k].tensors()) {
                    dst.shallow_clone().copy_(src);
                }
                st.stager.mark_consumed(k)?;
            }
            None => {
                let device = dqn.online_vs.device();
                for (dst, src) in self.inputs.tensors().into_iter().zip(b.tensors()) {
                    dst.shallow_clone().copy_(&src.to_device_(device, src.kind(), true, false));
                }
            }
        }
        self.graph.replay()?;
        dqn.finish_device_update();
        self.summed += 1;
        Ok(())
    }

    /// The number of updates since the last call and their mean statistics (reads the device,
    /// so it waits for the queued updates); `None` when there were none.
    pub fn take_stats(&mut self) -> Option<(u64, UpdateStats)> {
        if self.summed == 0 {
            return None;
        }
        let st = stats_from_sums(&self.sums, self.summed);
        let _ = self.sums.zero_();
        Some((std::mem::take(&mut self.summed), st))
    }
}
