//! The DQN update (Mnih et al. 2015) with the usual refinements: double DQN (van Hasselt et al.
//! 2016), Huber or MSE loss, gradient-norm clipping, hard or Polyak target updates.
//! Terminal transitions stop bootstrapping; truncated ones bootstrap (the replay memory keeps the
//! true next observation).

use serde::{Deserialize, Serialize};
use tch::{nn, Device, Kind, Reduction, Tensor};

use crate::optim::{Optimizer, OptimizerKind};
use crate::qnet::{QNetConfig, QNetwork};
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
    /// The target network's weight-norm scales, recomputed when the target changes.
    target_scales: Vec<Option<Tensor>>,
}

impl Dqn {
    /// Fresh networks on `device` (the target starts as a copy of the online network).
    pub fn new(net: &QNetConfig, cfg: DqnConfig, device: Device) -> Dqn {
        let online_vs = nn::VarStore::new(device);
        let online = QNetwork::new(&online_vs.root(), net);
        let mut target_vs = nn::VarStore::new(device);
        let target = QNetwork::new(&target_vs.root(), net);
        target_vs.copy(&online_vs).expect("same architecture");
        target_vs.freeze();
        let params: Vec<(String, Tensor)> =
            online_vs.variables().into_iter().filter(|(_, t)| t.requires_grad()).collect();
        let opt = Optimizer::new(cfg.optimizer, cfg.lr, params);
        let target_scales = tch::no_grad(|| target.wn_scales());
        Dqn { online_vs, online, target_vs, target, opt, cfg, updates: 0, target_scales }
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
        self.refresh_target_scales();
    }

    fn refresh_target_scales(&mut self) {
        self.target_scales = tch::no_grad(|| self.target.wn_scales());
    }

    /// TD targets `r + gamma (1 - terminated) Q_target(s', a*)`, `a*` from the online network
    /// under double DQN, else from the target network.
    pub fn td_target(&self, b: &TensorBatch) -> Tensor {
        let scales = tch::no_grad(|| self.online.wn_scales());
        self.td_target_scaled(b, &scales)
    }

    fn td_target_scaled(&self, b: &TensorBatch, online_scales: &[Option<Tensor>]) -> Tensor {
        tch::no_grad(|| {
            let next_t = self.target.forward_scaled(&b.next_obs, false, &self.target_scales);
            let next_v = if self.cfg.double_dqn {
                let a = self.online.forward_scaled(&b.next_obs, false, online_scales).argmax(1, true);
                next_t.gather(1, &a, false).squeeze_dim(1)
            } else {
                next_t.max_dim(1, false).0
            };
            &b.rewards + (1.0 - &b.terminated) * next_v * self.cfg.gamma
        })
    }

    /// One gradient step on a batch. The weight-norm scales `g/||v||` are computed once for the
    /// online network (shared by the target and the loss passes) and cached for the target.
    pub fn update(&mut self, b: &TensorBatch) -> UpdateStats {
        let (scales, norms) = self.online.wn_train_scales();
        let detached: Vec<Option<Tensor>> = scales.iter().map(|s| s.as_ref().map(|t| t.detach())).collect();
        let target = self.td_target_scaled(b, &detached);
        let q = self.online.forward_scaled(&b.obs, true, &scales);
        let q_sa = q.gather(1, &b.actions.unsqueeze(1), false).squeeze_dim(1);
        let loss = match self.cfg.loss {
            Loss::Huber => q_sa.huber_loss(&target, Reduction::Mean, 1.0),
            Loss::Mse => q_sa.mse_loss(&target, Reduction::Mean),
        };
        self.opt.zero_grad();
        loss.backward();
        self.online.complete_wn_grads(&norms);
        let grad_norm = self.opt.clip_and_step(self.cfg.grad_clip_norm);
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
                self.refresh_target_scales();
            }
            _ => {}
        }
        UpdateStats {
            loss: f64::try_from(&loss).unwrap_or(f64::NAN),
            q_mean: f64::try_from(q_sa.mean(Kind::Float)).unwrap_or(f64::NAN),
            grad_norm,
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
        self.refresh_target_scales();
        Ok(())
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
    use crate::qnet::{Arch, Variant};

    fn setup(double: bool) -> Dqn {
        tch::manual_seed(0);
        let net = QNetConfig {
            arch: Arch::Mlp,
            variant: Variant::Plain,
            dueling: false,
            obs_shape: vec![3],
            num_actions: 2,
            hidden: 8,
        };
        let cfg = DqnConfig {
            gamma: 0.9,
            double_dqn: double,
            loss: Loss::Huber,
            grad_clip_norm: Some(10.0),
            target_update: TargetUpdate::Hard(1000),
            optimizer: OptimizerKind::Adam { beta1: 0.9, beta2: 0.999, eps: 1e-8 },
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
        let mut a = setup(true);
        let b = batch();
        for _ in 0..7 {
            a.update(&b);
        }
        let dir = std::env::temp_dir().join(format!("wndqn-dqn-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        a.save(&dir).unwrap();
        let mut c = setup(true);
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
        // Same next update, bit for bit.
        let (sa, sc) = (a.update(&b), c.update(&b));
        assert_eq!(sa.loss.to_bits(), sc.loss.to_bits());
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
}
