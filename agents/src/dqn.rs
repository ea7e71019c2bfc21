//! The DQN update (Mnih et al. 2015) with the usual refinements: double DQN (van Hasselt et al.
//! 2016), Huber or MSE loss, gradient-norm clipping, hard or Polyak target updates.
//! Terminal transitions stop bootstrapping; truncated ones bootstrap (the replay memory keeps the
//! true next observation).

use serde::{Deserialize, Serialize};
use tch::{nn, Device, Kind, Reduction, Tensor};

use crate::kernels::{data, f32s};
use crate::layers::Operands;
use crate::optim::{Optimizer, OptimizerKind};
use crate::qnet::{QNetConfig, QNetwork, TrainPass};
use crate::replay::TensorBatch;

/// TD loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Loss {
    /// Huber (smooth L1, delta 1): the Nature DQN's error clipping.
    Huber,
    /// Squared error.
    Mse,
}

/// How the target network follows the online network.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TargetUpdate {
    /// Copy every `n` learner updates.
    Hard(u64),
    /// `target <- tau * online + (1 - tau) * target` after every update.
    Polyak(f64),
}

/// Update settings.
#[derive(Debug, Clone, Copy)]
pub struct DqnConfig {
    /// Discount.
    pub gamma: f64,
    /// Double DQN targets.
    pub double_dqn: bool,
    /// Loss.
    pub loss: Loss,
    /// Clip the global gradient norm to this (None = no clipping).
    pub grad_clip_norm: Option<f64>,
    /// Target network updates.
    pub target_update: TargetUpdate,
    /// Optimizer.
    pub optimizer: OptimizerKind,
    /// Learning rate.
    pub lr: f64,
}

/// What one update measured.
#[derive(Debug, Clone, Copy, Default)]
pub struct UpdateStats {
    /// TD loss.
    pub loss: f64,
    /// Mean Q(s, a) over the batch.
    pub q_mean: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
}

/// Entries of the statistics sums of [`Dqn::update_on_device`].
pub const STAT_SUMS: i64 = 3;

/// The means of `n` updates' statistics from the sums [`Dqn::update_on_device`] added (a read
/// from the device).
pub fn stats_from_sums(sums: &Tensor, n: u64) -> UpdateStats {
    let v = Vec::<f64>::try_from(sums.to_device(Device::Cpu)).unwrap_or_else(|_| vec![f64::NAN; 3]);
    let n = n.max(1) as f64;
    UpdateStats { loss: v[0] / n, q_mean: v[1] / n, grad_norm: v[2] / n }
}

/// Online + target networks and their optimizer.
pub struct Dqn {
    /// Online network variables.
    pub online_vs: nn::VarStore,
    /// Online network.
    pub online: QNetwork,
    /// Target network variables.
    pub target_vs: nn::VarStore,
    /// Target network.
    pub target: QNetwork,
    /// Optimizer over the online network's trainable variables.
    pub opt: Optimizer,
    cfg: DqnConfig,
    updates: u64,
    /// The target network's operands (every normalization folded into its weight, bf16
    /// weights), remade when the target changes.
    target_ops: Vec<Operands>,
}

impl Dqn {
    /// Fresh networks on `device` (the target starts as a copy of the online network).
    pub fn new(net: &QNetConfig, cfg: DqnConfig, device: Device) -> Dqn {
        Dqn::with_cpu_loops(net, cfg, device, device == Device::Cpu)
    }

    /// [`Dqn::new`], the CPU's loops ([`crate::reparam`], [`crate::explicit`]) on or off: off,
    /// a CPU learner takes the tensor-op path that CUDA takes (for tests of that path here).
    fn with_cpu_loops(net: &QNetConfig, cfg: DqnConfig, device: Device, loops: bool) -> Dqn {
        let online_vs = nn::VarStore::new(device);
        let mut online = QNetwork::new(&online_vs.root(), net);
        if loops {
            online.materialize_small_layers();
            online.prepare_explicit();
        }
        let mut target_vs = nn::VarStore::new(device);
        let target = QNetwork::new(&target_vs.root(), net);
        target_vs.copy(&online_vs).expect("same architecture");
        target_vs.freeze();
        let params: Vec<(String, Tensor)> =
            online_vs.variables().into_iter().filter(|(_, t)| t.requires_grad()).collect();
        let opt = Optimizer::new(cfg.optimizer, cfg.lr, params);
        let target_ops = target.folded_operands();
        Dqn { online_vs, online, target_vs, target, opt, cfg, updates: 0, target_ops }
    }

    /// Compute the update's forward and backward passes as `compute` says; the weights, the
    /// optimizer, the loss and the targets stay f32 whatever it is.
    pub fn set_compute(&mut self, compute: crate::layers::Compute) {
        self.online.set_compute(compute);
        self.target.set_compute(compute);
        self.target_ops = self.target.folded_operands();
    }

    /// Learner updates done.
    pub fn updates(&self) -> u64 {
        self.updates
    }

    /// Data-dependent init on real observations, then sync the target.
    pub fn data_init(&mut self, obs: &Tensor, init_scale: f64) {
        self.online.data_init(obs, init_scale);
        self.sync_target();
    }

    /// Hard copy online -> target.
    pub fn sync_target(&mut self) {
        self.target_vs.copy(&self.online_vs).expect("same architecture");
        self.refresh_target_ops();
    }

    /// Remake the target's cached operands, in place: a captured update reads them at fixed
    /// addresses.
    fn refresh_target_ops(&mut self) {
        tch::no_grad(|| {
            let new = self.target.folded_operands();
            for (old, new) in self.target_ops.iter_mut().zip(&new) {
                old.refresh(new);
            }
        });
    }

    /// TD targets `r + gamma (1 - terminated) Q_target(s', a*)`, `a*` from the online network
    /// under double DQN, else from the target network.
    pub fn td_target(&self, b: &TensorBatch) -> Tensor {
        let ops = tch::no_grad(|| self.online.operands(&self.online.wn_scales()));
        self.td_target_with(b, &ops)
    }

    fn td_target_with(&self, b: &TensorBatch, online_ops: &[Operands]) -> Tensor {
        let online_next = self.cfg.double_dqn.then(|| self.online.forward_with(&b.next_obs, false, online_ops));
        self.td_target_from(b, online_next.as_ref())
    }

    /// TD targets with double DQN's online Q-values on the next observations given.
    fn td_target_from(&self, b: &TensorBatch, online_next: Option<&Tensor>) -> Tensor {
        tch::no_grad(|| {
            let next_t = self.target.forward_with(&b.next_obs, false, &self.target_ops);
            let next_v = if let Some(q) = online_next {
                let a = q.argmax(1, true);
                next_t.gather(1, &a, false).squeeze_dim(1)
            } else {
                next_t.max_dim(1, false).0
            };
            &b.rewards + (1.0 - &b.terminated) * next_v * self.cfg.gamma
        })
    }

    /// Forward passes, TD loss, backward pass and the weight-norm gradient completion: what
    /// both update paths share. The online network's operands (weight-norm scales `g/||v||`,
    /// bf16 weights) are made once and shared by its two passes; the target's are cached.
    /// Returns the loss and `Q(s, a)`.
    fn loss_and_grads(&mut self, b: &TensorBatch) -> (Tensor, Tensor) {
        let opt = &self.opt;
        let pass = self.online.train_pass(&|v| opt.row_norms(v));
        let detached: Vec<Operands> = pass.ops.iter().map(Operands::detach).collect();
        if self.online.explicit_ready() {
            return self.explicit_loss_and_grads(b, &pass, &detached);
        }
        let target = self.td_target_with(b, &detached);
        let q = self.online.forward_with(&b.obs, true, &pass.ops);
        let q_sa = q.gather(1, &b.actions.unsqueeze(1), false).squeeze_dim(1);
        let loss = match self.cfg.loss {
            Loss::Huber => q_sa.huber_loss(&target, Reduction::Mean, 1.0),
            Loss::Mse => q_sa.mse_loss(&target, Reduction::Mean),
        };
        self.opt.zero_grad();
        loss.backward();
        for (v, dots, norm) in self.online.finish_grads(&pass) {
            self.opt.project_rows(&v, &dots, &norm).expect("the optimizer holds every online parameter once");
        }
        (loss, q_sa)
    }

    /// [`Dqn::loss_and_grads`] by the explicit training pass ([`crate::explicit`]): the loss
    /// and its gradient by one loop over the batch, every gradient written (not accumulated),
    /// so none is zeroed first. Double DQN's online pass on the next observations is the
    /// training pass's own, on both halves of one batch (one product per layer instead of two),
    /// except with mean-only BN, whose training pass takes the batch's statistics.
    fn explicit_loss_and_grads(
        &mut self,
        b: &TensorBatch,
        pass: &TrainPass,
        detached: &[Operands],
    ) -> (Tensor, Tensor) {
        let n = b.obs.size()[0];
        let (q, tape, target) = if self.cfg.double_dqn && !self.online.uses_batch_statistics() {
            let both = Tensor::cat(&[&b.obs, &b.next_obs], 0);
            let (q_all, tape) = self.online.explicit_forward(&both, &pass.ops, n);
            let target = self.td_target_from(b, Some(&q_all.narrow(0, n, n)));
            (q_all.narrow(0, 0, n), tape, target)
        } else {
            let target = self.td_target_with(b, detached);
            let (q, tape) = self.online.explicit_forward(&b.obs, &pass.ops, n);
            (q, tape, target)
        };
        let (actions, target) = (b.actions.to_kind(Kind::Int64).contiguous(), target.contiguous());
        // SAFETY: `q` and `target` are contiguous CPU f32 tensors of this update, `actions` a
        // contiguous i64 one; none is written while they are read.
        let (loss, q_sa, dq) = unsafe {
            crate::explicit::td_loss(f32s(&q), data::<i64>(&actions), f32s(&target), self.cfg.loss == Loss::Huber)
        };
        self.online.explicit_backward(tape, Tensor::from_slice(&dq).view(q.size().as_slice()), &pass.ops);
        let terms = self.online.finish_grads(pass);
        debug_assert!(terms.is_empty(), "the explicit pass has no tensor-op weight norm");
        (Tensor::from(loss as f32), Tensor::from_slice(&q_sa))
    }

    /// One gradient step on a batch, its statistics read back.
    pub fn update(&mut self, b: &TensorBatch) -> UpdateStats {
        let (loss, q_sa) = self.loss_and_grads(b);
        let grad_norm = self.opt.clip_and_step(self.cfg.grad_clip_norm);
        let opt = &self.opt;
        self.online.project(&|v| opt.row_norms(v));
        self.after_step();
        UpdateStats {
            loss: f64::try_from(&loss).unwrap_or(f64::NAN),
            q_mean: f64::try_from(q_sa.mean(Kind::Float)).unwrap_or(f64::NAN),
            grad_norm,
        }
    }

    /// Prepare for [`Dqn::update_on_device`] (before a capture).
    pub fn make_capturable(&mut self) {
        self.opt.make_capturable();
    }

    /// The gradient step of [`Dqn::update`] with nothing read back and nothing decided on the
    /// host, so that it can be captured as a CUDA graph and replayed: the clipping factor and
    /// the optimizer's bias corrections are computed on the device, and the statistics are
    /// added to `sums` (`[STAT_SUMS]` f64 on the device: loss, mean Q, gradient norm; read with
    /// [`stats_from_sums`]). The host's part of the update, counting and target updates, is
    /// [`Dqn::finish_device_update`], called after each run or replay.
    pub fn update_on_device(&mut self, b: &TensorBatch, sums: &Tensor) -> anyhow::Result<()> {
        let (loss, q_sa) = self.loss_and_grads(b);
        let grad_norm = self.opt.clip_grad_norm_on_device(self.cfg.grad_clip_norm)?;
        self.opt.step_on_device()?;
        self.online.project(&|_| None);
        tch::no_grad(|| {
            let st = Tensor::stack(&[loss.detach(), q_sa.mean(Kind::Float).detach(), grad_norm], 0);
            let _ = sums.shallow_clone().g_add_(&st.to_kind(Kind::Double));
        });
        Ok(())
    }

    /// The host's part of an update done by [`Dqn::update_on_device`].
    pub fn finish_device_update(&mut self) {
        self.opt.count_step();
        self.after_step();
    }

    /// Count the update and move the target network.
    fn after_step(&mut self) {
        self.updates += 1;
        match self.cfg.target_update {
            TargetUpdate::Hard(n) if n > 0 && self.updates.is_multiple_of(n) => self.sync_target(),
            TargetUpdate::Polyak(tau) => {
                tch::no_grad(|| {
                    let online = self.online_vs.variables();
                    for (name, mut t) in self.target_vs.variables() {
                        let _ = t.lerp_(&online[&name], tau);
                    }
                });
                self.refresh_target_ops();
            }
            _ => {}
        }
    }

    /// Save online and target networks and the optimizer state into `dir` (safetensors).
    pub fn save(&self, dir: &std::path::Path) -> anyhow::Result<()> {
        self.online_vs.save(dir.join("online.safetensors"))?;
        self.target_vs.save(dir.join("target.safetensors"))?;
        self.opt.save(&dir.join("optimizer.safetensors"))?;
        Ok(())
    }

    /// Restore what [`Dqn::save`] wrote; the update counter comes from the optimizer's step.
    pub fn load(&mut self, dir: &std::path::Path) -> anyhow::Result<()> {
        self.online_vs.load(dir.join("online.safetensors"))?;
        self.target_vs.load(dir.join("target.safetensors"))?;
        self.opt.load(&dir.join("optimizer.safetensors"))?;
        self.updates = self.opt.steps() as u64;
        self.refresh_target_ops();
        Ok(())
    }

    /// A copy of everything an update changes: both networks, the optimizer, the counter.
    pub fn state_copy(&self) -> DqnState {
        DqnState {
            online: copy_vars(&self.online_vs),
            target: copy_vars(&self.target_vs),
            opt: self.opt.state_tensors().into_iter().map(|(n, t)| (n, t.copy())).collect(),
            updates: self.updates,
        }
    }

    /// Go back to `s`, in place (every tensor keeps its address).
    pub fn restore(&mut self, s: &DqnState) -> anyhow::Result<()> {
        for (vs, saved) in [(&self.online_vs, &s.online), (&self.target_vs, &s.target)] {
            tch::no_grad(|| {
                for (n, t) in vs.variables() {
                    if let Some(src) = saved.get(&n) {
                        t.shallow_clone().copy_(src);
                    }
                }
            });
        }
        self.opt.restore(&s.opt)?;
        self.updates = s.updates;
        self.refresh_target_ops();
        Ok(())
    }

    /// Check an update made another way (`other`: a replayed CUDA graph) against the eager
    /// update ([`Dqn::update`]) from the same state on the same batch `b`: the loss, the mean Q
    /// and every online variable after it must agree within `tol` (relative to each one's
    /// scale). Either way the network ends as the eager update left it. `Ok(Err(why))` is a
    /// mismatch, naming the largest difference.
    pub fn check_against_eager(
        &mut self,
        b: &TensorBatch,
        other: impl FnOnce(&mut Dqn) -> anyhow::Result<UpdateStats>,
        tol: f64,
    ) -> anyhow::Result<Result<f64, String>> {
        let before = self.state_copy();
        let theirs = other(self)?;
        let after_other = copy_vars(&self.online_vs);
        self.restore(&before)?;
        let ours = self.update(b);
        let rel = |a: f64, b: f64| (a - b).abs() / (1.0 + b.abs());
        let mut worst = (rel(theirs.loss, ours.loss), "the TD loss".to_string());
        let q = rel(theirs.q_mean, ours.q_mean);
        if q > worst.0 || q.is_nan() {
            worst = (q, "the mean Q".into());
        }
        tch::no_grad(|| {
            for (n, t) in self.online_vs.variables() {
                let o = &after_other[&n];
                let scale = 1.0 + f64::try_from(t.abs().max()).unwrap_or(f64::NAN);
                let d = f64::try_from((&t - o).abs().max()).unwrap_or(f64::NAN) / scale;
                if d > worst.0 || d.is_nan() {
                    worst = (d, n);
                }
            }
        });
        Ok(if worst.0 <= tol {
            Ok(worst.0)
        } else {
            Err(format!(
                "{} differs by {:e} (relative; the tolerance is {tol:e}): loss {} vs {} eager",
                worst.1, worst.0, theirs.loss, ours.loss
            ))
        })
    }

    /// CPU copies of the online network's variables (for actors), by name.
    pub fn snapshot(&self) -> Vec<(String, Tensor)> {
        tch::no_grad(|| {
            let mut v: Vec<(String, Tensor)> =
                self.online_vs.variables().into_iter().map(|(n, t)| (n, t.to_device(Device::Cpu).copy())).collect();
            v.sort_by(|a, b| a.0.cmp(&b.0));
            v
        })
    }
}

/// Copies of every variable of `vs`, by name.
fn copy_vars(vs: &nn::VarStore) -> std::collections::HashMap<String, Tensor> {
    tch::no_grad(|| vs.variables().into_iter().map(|(n, t)| (n, t.copy())).collect())
}

/// What [`Dqn::state_copy`] keeps.
pub struct DqnState {
    online: std::collections::HashMap<String, Tensor>,
    target: std::collections::HashMap<String, Tensor>,
    opt: std::collections::HashMap<String, Tensor>,
    updates: u64,
}

/// Copy a snapshot into `vs` (same names).
pub fn load_snapshot(vs: &nn::VarStore, snap: &[(String, Tensor)]) {
    tch::no_grad(|| {
        let vars = vs.variables();
        for (n, t) in snap {
            if let Some(v) = vars.get(n) {
                v.shallow_clone().copy_(t);
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::normalization::Variant;
    use crate::optim::{Adam, Adamax, RmsProp};
    use crate::qnet::Arch;

    fn setup(double: bool) -> Dqn {
        setup_variant(double, Variant::Plain, 0)
    }

    fn setup_variant(double: bool, variant: Variant, seed: i64) -> Dqn {
        tch::manual_seed(seed);
        let net = QNetConfig {
            arch: Arch::Mlp,
            variant,
            dueling: false,
            obs_shape: vec![3],
            num_actions: 2,
            hidden: 8,
            norm: Default::default(),
        };
        let cfg = DqnConfig {
            gamma: 0.9,
            double_dqn: double,
            loss: Loss::Huber,
            grad_clip_norm: Some(10.0),
            target_update: TargetUpdate::Hard(1000),
            optimizer: OptimizerKind::Adam(Adam { beta1: 0.9, beta2: 0.999, eps: 1e-8 }),
            lr: 1e-3,
        };
        Dqn::new(&net, cfg, Device::Cpu)
    }

    fn batch() -> TensorBatch {
        TensorBatch {
            obs: Tensor::from_slice(&[0.1f32, 0.2, 0.3, -0.5, 0.4, 0.9]).view([2, 3]),
            next_obs: Tensor::from_slice(&[0.3f32, -0.2, 0.1, 0.7, 0.7, -0.9]).view([2, 3]),
            actions: Tensor::from_slice(&[1i64, 0]),
            rewards: Tensor::from_slice(&[1.0f32, -1.0]),
            terminated: Tensor::from_slice(&[0.0f32, 1.0]),
        }
    }

    #[test]
    fn targets_bootstrap_only_when_not_terminated() {
        for double in [false, true] {
            let d = setup(double);
            let b = batch();
            // Perturb the online net so online and target disagree.
            tch::no_grad(|| {
                for (_, mut t) in d.online_vs.variables() {
                    let _ = t.g_add_(&(t.randn_like() * 0.5));
                }
            });
            let y = Vec::<f32>::try_from(d.td_target(&b)).unwrap();
            let qt = d.target.forward_t(&b.next_obs, false);
            let qo = d.online.forward_t(&b.next_obs, false);
            let qt0 = Vec::<f32>::try_from(qt.get(0)).unwrap();
            let qo0 = Vec::<f32>::try_from(qo.get(0)).unwrap();
            let a = if double {
                if qo0[0] >= qo0[1] {
                    0
                } else {
                    1
                }
            } else if qt0[0] >= qt0[1] {
                0
            } else {
                1
            };
            let expect0 = 1.0 + 0.9 * qt0[a];
            assert!((y[0] - expect0).abs() < 1e-5, "double={double}: {} vs {expect0}", y[0]);
            assert!((y[1] - -1.0).abs() < 1e-6, "terminal target must be the reward");
        }
    }

    #[test]
    fn save_load_round_trips_networks_optimizer_and_counter() {
        for v in Variant::ALL {
            save_load_round_trip(v);
        }
    }

    /// Every variant's state: spectral norm's `u`, `v` and the projected variant's initial
    /// norms included (a fresh network of another seed has other values for all of them).
    fn save_load_round_trip(variant: Variant) {
        let mut a = setup_variant(true, variant, 0);
        let b = batch();
        for _ in 0..7 {
            a.update(&b);
        }
        let dir = std::env::temp_dir().join(format!("wndqn-dqn-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        a.save(&dir).unwrap();
        let mut c = setup_variant(true, variant, 1);
        for (n, t) in a.online_vs.variables() {
            if n.contains(".sn_") || n.ends_with(".v_norm0") {
                assert!(!t.equal(&c.online_vs.variables()[&n]), "{variant:?} {n}: equal before the load");
            }
        }
        c.load(&dir).unwrap();
        assert_eq!(c.updates(), 7);
        for (n, t) in a.online_vs.variables() {
            assert!(t.equal(&c.online_vs.variables()[&n]), "online {n}");
        }
        for (n, t) in a.target_vs.variables() {
            assert!(t.equal(&c.target_vs.variables()[&n]), "target {n}");
        }
        for ((n, x), (_, y)) in a.opt.state_tensors().iter().zip(c.opt.state_tensors().iter()) {
            assert!(x.equal(y), "optimizer {n}");
        }
        // Same next update, bit for bit; but weight norm's `||v||`: the run that goes on takes
        // it from its last fused optimizer step (summed in f64), the loaded one computes it (in
        // f32), which may differ in the last bit.
        let (sa, sc) = (a.update(&b), c.update(&b));
        if variant.recipe().weight_normed() && !variant.recipe().projected {
            assert!((sa.loss - sc.loss).abs() <= 1e-6 * sa.loss.abs(), "{variant:?}: {} vs {}", sa.loss, sc.loss);
        } else {
            assert_eq!(sa.loss.to_bits(), sc.loss.to_bits(), "{variant:?}: {} vs {}", sa.loss, sc.loss);
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn updates_reduce_td_error_and_target_syncs() {
        let mut d = setup(true);
        let b = batch();
        let first = d.update(&b).loss;
        for _ in 0..200 {
            d.update(&b);
        }
        let last = d.update(&b).loss;
        assert!(last < first * 0.5, "loss {first} -> {last}");
        d.sync_target();
        for (n, t) in d.target_vs.variables() {
            assert!(t.equal(&d.online_vs.variables()[&n]), "{n}");
        }
    }

    fn random_batch(rows: i64) -> TensorBatch {
        let opts = (Kind::Float, Device::Cpu);
        TensorBatch {
            obs: Tensor::randn([rows, 3], opts),
            next_obs: Tensor::randn([rows, 3], opts),
            actions: Tensor::randint(2, [rows], (Kind::Int64, Device::Cpu)),
            rewards: Tensor::randn([rows], opts),
            terminated: Tensor::rand([rows], opts).ge(0.8).to_kind(Kind::Float),
        }
    }

    /// K bf16 updates (the Nature CNN's convolutions in channels-last bf16, the dense layers'
    /// products in bf16) stay close to K f32 updates from the same weights on the same batches,
    /// for every variant. Tolerances: bf16 keeps 8 significant bits, so each layer's inputs and
    /// weights are rounded by up to 2^-9 relative; over five layers, and the cancellation of a
    /// dueling head (value + advantage - mean advantage), Q-values of the same weights agree to
    /// a few percent of their largest (5% allowed; 2-4% seen, 4.02% once on mean-only BN over
    /// weights drawn from what the tests beside this one leave in the shared generator). The Huber loss moves by at most
    /// what a TD error `Q(s,a) - r - γ Q'(s',a*)` moves (its slope is at most 1): 5% of the
    /// largest |Q| for `Q(s,a)`, and for the target as much again, plus twice that where double
    /// DQN's argmax picks another action (only between actions closer than the error), so
    /// `(1 + 3γ)` times 5% of the largest |Q| (differences of 3-9% of the loss seen on batches
    /// of 8, depending on the data and the thread count oneDNN splits the work over). Adam moves each weight by at most
    /// about lr per step whatever the gradient's size, so where a bf16 gradient differs (or
    /// flips sign) the weights drift apart by at most 2 lr per step, K steps 2 K lr (the bound),
    /// while most weights move alike (the mean difference at most a tenth of that). The
    /// optimizer state stays f32.
    #[test]
    fn bf16_updates_stay_close_to_f32_updates() {
        let (k, lr) = (6u64, 1e-4);
        for (variant, dueling) in [
            (Variant::Plain, false),
            (Variant::WeightNorm, true),
            (Variant::WeightNormNoinit, false),
            (Variant::WeightNormMobn, false),
        ] {
            let net = nature(variant, dueling);
            let adam = OptimizerKind::Adam(Adam { beta1: 0.9, beta2: 0.999, eps: 1.5e-4 });
            let cfg = double_huber(adam, lr, 10.0, 4);
            tch::manual_seed(9);
            let mut f32_ = Dqn::new(&net, cfg, Device::Cpu);
            let mut bf16 = Dqn::new(&net, cfg, Device::Cpu);
            bf16.online_vs.copy(&f32_.online_vs).unwrap();
            bf16.sync_target();
            bf16.set_compute(crate::layers::Compute::Bf16 { channels_last: true });
            let batches: Vec<TensorBatch> = (0..k).map(|_| frame_batch(Device::Cpu, 8)).collect();
            if variant.data_init() {
                f32_.data_init(&batches[0].obs, 1.0);
                bf16.data_init(&batches[0].obs, 1.0);
            }
            let what = format!("{variant:?} dueling={dueling}");
            let (qa, qb) = tch::no_grad(|| {
                (
                    f32_.online.forward_t(&batches[0].obs, false),
                    bf16.online.forward_scaled(&batches[0].obs, false, &bf16.online.wn_scales()),
                )
            });
            let rel = f64::try_from((&qa - &qb).abs().max()).unwrap() / f64::try_from(qa.abs().max()).unwrap();
            assert!(qb.kind() == Kind::Float && rel < 0.05, "{what}: Q-values differ by {rel} (relative)");
            for b in &batches {
                let q_max = f64::try_from(tch::no_grad(|| f32_.online.forward_t(&b.obs, false)).abs().max()).unwrap();
                let (sa, sb) = (f32_.update(b), bf16.update(b));
                assert!(
                    sb.loss.is_finite() && (sa.loss - sb.loss).abs() <= (1.0 + 3.0 * 0.99) * 0.05 * q_max + 1e-3,
                    "{what}: loss {} vs {} (largest |Q| {q_max})",
                    sa.loss,
                    sb.loss
                );
            }
            let (mut max, mut sum, mut count) = (0.0f64, 0.0, 0.0);
            let theirs = bf16.online_vs.variables();
            for (name, t) in f32_.online_vs.variables() {
                assert_eq!(theirs[&name].kind(), Kind::Float, "{what}: {name} is not f32");
                let d = (&t - &theirs[&name]).abs();
                if !t.requires_grad() {
                    // A mean-only BN running mean follows the batch means, not Adam.
                    let rel = f64::try_from(d.max()).unwrap() / (1.0 + f64::try_from(t.abs().max()).unwrap());
                    assert!(rel < 0.02, "{what}: {name} differs by {rel} (relative)");
                    continue;
                }
                max = max.max(f64::try_from(d.max()).unwrap());
                sum += f64::try_from(d.sum(Kind::Double)).unwrap();
                count += t.numel() as f64;
            }
            let bound = 2.0 * k as f64 * lr;
            assert!(max <= bound * 1.01, "{what}: weights differ by up to {max}, more than 2 K lr = {bound}");
            assert!(sum / count <= 0.1 * bound, "{what}: mean difference {} of bound {bound}", sum / count);
            assert!(bf16.opt.state_tensors().iter().all(|(_, t)| t.kind() == Kind::Float || t.kind() == Kind::Int64));
        }
    }

    /// The capturable update (clip factor and bias corrections on the device, statistics summed
    /// on the device) gives the parameters, target, optimizer state and statistics of the eager
    /// update, for every variant, dueling or not, every optimizer, hard and Polyak targets,
    /// clipping on and off, on the CPU's loops and on the tensor-op path that CUDA takes. A
    /// graph replays exactly this launch sequence (`graphed`; the test after this one checks
    /// the replays on a GPU).
    #[test]
    fn on_device_updates_equal_eager_updates() {
        let optimizers = [
            OptimizerKind::Adam(Adam { beta1: 0.9, beta2: 0.999, eps: 1e-8 }),
            OptimizerKind::Adamax(Adamax { beta1: 0.5, beta2: 0.999, eps: 1e-8 }),
            OptimizerKind::RmsProp(RmsProp { alpha: 0.95, eps: 0.01, centered: true, momentum: 0.0 }),
        ];
        let mut case = 0;
        for variant in Variant::ALL {
            for dueling in [false, true] {
                for (optimizer, multi_tensor) in optimizers.into_iter().flat_map(|o| [(o, true), (o, false)]) {
                    case += 1;
                    // The two paths over the cases, out of step with the other settings' cycles.
                    let loops = case % 5 < 3;
                    let net = QNetConfig {
                        arch: Arch::Mlp,
                        variant,
                        dueling,
                        obs_shape: vec![3],
                        num_actions: 2,
                        hidden: 16,
                        norm: Default::default(),
                    };
                    let cfg = DqnConfig {
                        gamma: 0.9,
                        double_dqn: case % 2 == 0,
                        loss: if case % 3 == 0 { Loss::Mse } else { Loss::Huber },
                        grad_clip_norm: if case % 4 == 0 { None } else { Some(0.5) },
                        target_update: if case % 2 == 0 { TargetUpdate::Hard(4) } else { TargetUpdate::Polyak(0.1) },
                        optimizer,
                        lr: 1e-2,
                    };
                    let what =
                        format!("{variant:?} dueling={dueling} multi_tensor={multi_tensor} loops={loops} {cfg:?}");
                    tch::manual_seed(case);
                    let mut eager = Dqn::with_cpu_loops(&net, cfg, Device::Cpu, loops);
                    let mut dev = Dqn::with_cpu_loops(&net, cfg, Device::Cpu, loops);
                    assert_eq!(eager.online.explicit_ready(), loops, "{what}: the path");
                    dev.online_vs.copy(&eager.online_vs).unwrap();
                    dev.sync_target();
                    let init = random_batch(16).obs;
                    if variant.data_init() {
                        eager.data_init(&init, 1.0);
                        dev.data_init(&init, 1.0);
                    }
                    let start = eager.snapshot();
                    dev.make_capturable();
                    dev.opt.multi_tensor = multi_tensor;
                    let sums = Tensor::zeros([STAT_SUMS], (Kind::Double, Device::Cpu));
                    let (mut loss, mut q, mut grad) = (0.0, 0.0, 0.0);
                    let k = 12;
                    for _ in 0..k {
                        let b = random_batch(16);
                        let st = eager.update(&b);
                        (loss, q, grad) = (loss + st.loss, q + st.q_mean, grad + st.grad_norm);
                        dev.update_on_device(&b, &sums).unwrap();
                        dev.finish_device_update();
                    }
                    assert_eq!((eager.updates(), dev.updates()), (k, k), "{what}");
                    assert_eq!(eager.opt.steps(), dev.opt.steps(), "{what}");
                    let close = |a: &Tensor, b: &Tensor, name: &str| {
                        let diff = f64::try_from((a - b).abs().max()).unwrap();
                        let scale = 1.0 + f64::try_from(a.abs().max()).unwrap();
                        // Float rounding apart (the two clip the gradients in different
                        // summation orders; RMSProp divides by small averages): 1e-4.
                        assert!(diff <= 1e-4 * scale, "{what}: {name} differs by {diff}");
                    };
                    for (n, t) in eager.online_vs.variables() {
                        close(&t, &dev.online_vs.variables()[&n], &format!("online {n}"));
                    }
                    for (n, t) in eager.target_vs.variables() {
                        close(&t, &dev.target_vs.variables()[&n], &format!("target {n}"));
                    }
                    for ((n, a), (_, b)) in eager.opt.state_tensors().iter().zip(dev.opt.state_tensors().iter()) {
                        close(a, b, &format!("optimizer {n}"));
                    }
                    let st = stats_from_sums(&sums, k);
                    let kf = k as f64;
                    for (a, b, name) in
                        [(loss / kf, st.loss, "loss"), (q / kf, st.q_mean, "q"), (grad / kf, st.grad_norm, "grad")]
                    {
                        assert!((a - b).abs() <= 1e-5 * (1.0 + a.abs()), "{what}: mean {name} {a} vs {b}");
                    }
                    // And the updates did something.
                    let moved = start
                        .iter()
                        .any(|(n, t)| f64::try_from((t - &eager.online_vs.variables()[n]).abs().max()).unwrap() > 1e-3);
                    assert!(moved, "{what}: nothing moved");
                }
            }
        }
    }

    use crate::graphed::{GraphedUpdate, WARM_UP};

    /// The Nature CNN on Atari frames (4 x 84 x 84, 6 actions).
    fn nature(variant: Variant, dueling: bool) -> QNetConfig {
        QNetConfig::nature(variant, dueling)
    }

    /// Double DQN with the Huber loss, gradients clipped at `clip`, a hard target sync every
    /// `sync` updates.
    fn double_huber(optimizer: OptimizerKind, lr: f64, clip: f64, sync: u64) -> DqnConfig {
        DqnConfig {
            gamma: 0.99,
            double_dqn: true,
            loss: Loss::Huber,
            grad_clip_norm: Some(clip),
            target_update: TargetUpdate::Hard(sync),
            optimizer,
            lr,
        }
    }

    fn frame_batch(device: Device, rows: i64) -> TensorBatch {
        let frames = |_| Tensor::randint(256, [rows, 4, 84, 84], (Kind::Uint8, device));
        TensorBatch {
            obs: frames(0),
            next_obs: frames(1),
            actions: Tensor::randint(6, [rows], (Kind::Int64, device)),
            rewards: Tensor::randn([rows], (Kind::Float, device)),
            terminated: Tensor::rand([rows], (Kind::Float, device)).ge(0.9).to_kind(Kind::Float),
        }
    }

    /// K graphed updates give the parameters, target, optimizer state and statistics of K eager
    /// updates on the same batches (Nature CNN; every variant; Adam, Adamax, RMSProp; a target
    /// sync inside the K). Float tolerance: cuDNN's backward kernels are not bit-deterministic.
    #[test]
    fn graphed_updates_equal_eager_updates() {
        if !tch::Cuda::is_available() {
            eprintln!("SKIPPED graphed_updates_equal_eager_updates: no CUDA device (the on-device update itself is checked against the eager one on the CPU above)");
            return;
        }
        let d = Device::Cuda(0);
        let cases = [
            (Variant::Plain, false, OptimizerKind::Adam(Adam { beta1: 0.9, beta2: 0.999, eps: 1.5e-4 })),
            (Variant::WeightNorm, false, OptimizerKind::Adam(Adam { beta1: 0.9, beta2: 0.999, eps: 1.5e-4 })),
            (Variant::WeightNormNoinit, true, OptimizerKind::Adamax(Adamax { beta1: 0.5, beta2: 0.999, eps: 1e-8 })),
            (
                Variant::WeightNormMobn,
                false,
                OptimizerKind::RmsProp(RmsProp { alpha: 0.95, eps: 0.01, centered: true, momentum: 0.0 }),
            ),
            (Variant::LayerNorm, true, OptimizerKind::Adam(Adam { beta1: 0.9, beta2: 0.999, eps: 1.5e-4 })),
            (
                Variant::SpectralNorm,
                false,
                OptimizerKind::RmsProp(RmsProp { alpha: 0.95, eps: 0.01, centered: false, momentum: 0.0 }),
            ),
            (Variant::WeightNormProjected, false, OptimizerKind::Adam(Adam { beta1: 0.9, beta2: 0.999, eps: 1.5e-4 })),
        ];
        for (variant, dueling, optimizer) in cases {
            let what = format!("{variant:?} dueling={dueling} {optimizer:?}");
            let (net, cfg) = (nature(variant, dueling), double_huber(optimizer, 1e-3, 1.0, 7));
            tch::manual_seed(5);
            let mut eager = Dqn::new(&net, cfg, d);
            let mut graphed = Dqn::new(&net, cfg, d);
            graphed.online_vs.copy(&eager.online_vs).unwrap();
            graphed.sync_target();
            let first = frame_batch(d, 32);
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
                let b = frame_batch(d, 32);
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
