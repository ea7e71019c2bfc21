//! The learner's update as one CUDA graph (issue 11): captured once, replayed for every update.
//!
//! On a GPU the eager update is launch-bound: a few hundred small kernels, each launched from the
//! CPU, for a batch of 32. [`Dqn::update_on_device`] is the same update with nothing read back
//! and nothing decided on the host (clip factor, bias corrections and statistics on the device),
//! so its launch sequence can be recorded once ([`crate::cuda_graph`]) and replayed with one call.
//! What stays on the host runs between replays: counting, target syncs
//! ([`Dqn::finish_device_update`]), weight publication, checkpoints, and reading the summed
//! statistics every `log.scalars_every` env steps ([`GraphedUpdate::take_stats`]).
//!
//! Inputs: the graph reads fixed device tensors. Each batch arrives as the replay thread leaves
//! it, in pinned host memory ([`wndqn_agents::replay::BatchPrep`]), and is copied to the device on
//! a separate copy stream into one of two slots ([`Stager`]), so that the copy of batch n+1
//! overlaps the replay of update n; the compute stream then waits for the slot, copies it into
//! the static inputs (device to device, about 2 MB) and replays. Without a copy stream (if one
//! cannot be made) the copies run on the compute stream, in order.

use anyhow::{bail, Result};
use tch::{Device, Kind, Tensor};
use wndqn_agents::dqn::{stats_from_sums, Dqn, UpdateStats, STAT_SUMS};
use wndqn_agents::replay::TensorBatch;

use crate::cuda_graph::{CudaGraph, Stager};

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

#[cfg(test)]
mod tests {
    use super::*;
    use wndqn_agents::dqn::{DqnConfig, Loss, TargetUpdate};
    use wndqn_agents::optim::OptimizerKind;
    use wndqn_agents::qnet::{Arch, QNetConfig, Variant};

    fn batch(device: Device) -> TensorBatch {
        let frames = |_| Tensor::randint(256, [32, 4, 84, 84], (Kind::Uint8, device));
        TensorBatch {
            obs: frames(0),
            next_obs: frames(1),
            actions: Tensor::randint(6, [32], (Kind::Int64, device)),
            rewards: Tensor::randn([32], (Kind::Float, device)),
            terminated: Tensor::rand([32], (Kind::Float, device)).ge(0.9).to_kind(Kind::Float),
        }
    }

    /// K graphed updates give the parameters, target, optimizer state and statistics of K eager
    /// updates on the same batches (Nature CNN; every variant; Adam, Adamax, RMSProp; a target
    /// sync inside the K). Float tolerance: cuDNN's backward kernels are not bit-deterministic.
    #[test]
    fn graphed_updates_equal_eager_updates() {
        if !tch::Cuda::is_available() {
            eprintln!("SKIPPED graphed_updates_equal_eager_updates: no CUDA device (the on-device update itself is checked against the eager one on the CPU in agents/src/dqn.rs)");
            return;
        }
        let d = Device::Cuda(0);
        let cases = [
            (Variant::Plain, false, OptimizerKind::Adam { beta1: 0.9, beta2: 0.999, eps: 1.5e-4 }),
            (Variant::WeightNorm, false, OptimizerKind::Adam { beta1: 0.9, beta2: 0.999, eps: 1.5e-4 }),
            (Variant::WeightNormNoinit, true, OptimizerKind::Adamax { beta1: 0.5, beta2: 0.999, eps: 1e-8 }),
            (
                Variant::WeightNormMobn,
                false,
                OptimizerKind::RmsProp { alpha: 0.95, eps: 0.01, centered: true, momentum: 0.0 },
            ),
        ];
        for (variant, dueling, optimizer) in cases {
            let what = format!("{variant:?} dueling={dueling} {optimizer:?}");
            let net = QNetConfig {
                arch: Arch::Nature,
                variant,
                dueling,
                obs_shape: vec![4, 84, 84],
                num_actions: 6,
                hidden: 128,
            };
            let cfg = DqnConfig {
                gamma: 0.99,
                double_dqn: true,
                loss: Loss::Huber,
                grad_clip_norm: Some(1.0),
                target_update: TargetUpdate::Hard(7),
                optimizer,
                lr: 1e-3,
            };
            tch::manual_seed(5);
            let mut eager = Dqn::new(&net, cfg, d);
            let mut graphed = Dqn::new(&net, cfg, d);
            graphed.online_vs.copy(&eager.online_vs).unwrap();
            graphed.sync_target();
            let first = batch(d);
            if variant.data_init() {
                eager.data_init(&first.obs, 1.0);
                graphed.data_init(&first.obs, 1.0);
            }
            let start = eager.snapshot();
            let mut g = GraphedUpdate::new(&mut graphed, &first).unwrap();
            assert!(g.staged(), "{what}: no copy stream");
            let mut sums = [0.0; 3];
            let mut add = |s: UpdateStats| {
                sums[0] += s.loss;
                sums[1] += s.q_mean;
                sums[2] += s.grad_norm;
            };
            for _ in 0..WARM_UP {
                add(eager.update(&first));
            }
            let k = 20;
            for _ in 0..k {
                let b = batch(d);
                add(eager.update(&b));
                // As the learner gets it: pinned by the replay thread.
                let pinned = b.shallow_clone().map(|t| t.to_device(Device::Cpu).pin_memory(d));
                g.update(&mut graphed, &pinned).unwrap();
            }
            let (n, st) = g.take_stats().unwrap();
            assert_eq!(n, k + WARM_UP, "{what}");
            assert_eq!(eager.updates(), graphed.updates(), "{what}");
            assert_eq!(eager.opt.steps(), graphed.opt.steps(), "{what}");
            let close = |a: &Tensor, b: &Tensor, name: &str| {
                let diff = f64::try_from((a - b).abs().max()).unwrap();
                let scale = f64::try_from(a.abs().max()).unwrap();
                assert!(diff <= 2e-4 * (1.0 + scale), "{what}: {name} differs by {diff} (scale {scale})");
            };
            for (name, t) in eager.online_vs.variables() {
                close(&t, &graphed.online_vs.variables()[&name], &format!("online {name}"));
                let moved = f64::try_from(
                    (&t.to_device(Device::Cpu) - &start.iter().find(|s| s.0 == name).unwrap().1).abs().max(),
                )
                .unwrap();
                assert!(moved > 1e-4 || name.contains("running_mean"), "{what}: {name} did not move");
            }
            for (name, t) in eager.target_vs.variables() {
                close(&t, &graphed.target_vs.variables()[&name], &format!("target {name}"));
            }
            for ((name, a), (_, b)) in eager.opt.state_tensors().iter().zip(graphed.opt.state_tensors().iter()) {
                close(a, b, &format!("optimizer {name}"));
            }
            let nf = n as f64;
            for (a, b, name) in [
                (sums[0] / nf, st.loss, "loss"),
                (sums[1] / nf, st.q_mean, "q"),
                (sums[2] / nf, st.grad_norm, "grad norm"),
            ] {
                assert!((a - b).abs() <= 1e-3 * (1.0 + a.abs()), "{what}: mean {name} {a} vs {b}");
            }
            eprintln!("graphed = eager over {n} updates: {what}");
        }
    }
}
